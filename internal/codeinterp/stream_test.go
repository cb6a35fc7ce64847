package codeinterp

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// flushCounter is a ResponseWriter that counts flushes and records what
// had been written at each one.
type flushCounter struct {
	*httptest.ResponseRecorder
	mu      sync.Mutex
	flushed []string
}

func (f *flushCounter) Flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushed = append(f.flushed, f.Body.String())
}

func (f *flushCounter) flushes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.flushed...)
}

var _ http.Flusher = (*flushCounter)(nil)

func TestNDJSONFlushes(t *testing.T) {
	t.Parallel()
	main := resultLine(map[string]json.RawMessage{"text/plain": json.RawMessage(`"2"`)}, true)
	tests := []struct {
		name  string
		lines []any
		// flushes: how many times the writer is flushed before close
		// (what net/http then sends in the response's last write).
		flushes int
	}{
		{"output is flushed at once, the count rides with it", []any{lineExecutionCount{Type: "number_of_executions"}, lineStream{Type: "stdout", Text: "a"}}, 1},
		{"a display result is flushed at once", []any{resultLine(nil, false)}, 1},
		{"the main result waits for the end of the run", []any{lineExecutionCount{Type: "number_of_executions"}, main}, 0},
		{"a line after the main result takes it along", []any{main, lineStream{Type: "stdout", Text: "late"}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := &flushCounter{ResponseRecorder: httptest.NewRecorder()}
			n := newNDJSON(w, time.Hour)
			for _, l := range tt.lines {
				n.emit(l)
			}
			n.close()
			if got := len(w.flushes()); got != tt.flushes {
				t.Fatalf("%d flushes before the end, want %d: %q", got, tt.flushes, w.flushes())
			}
			if !strings.HasSuffix(w.Body.String(), `{"type":"end_of_execution"}`+"\n") {
				t.Fatalf("body %q does not end with end_of_execution", w.Body.String())
			}
			n.emit(lineStream{Type: "stdout", Text: "after close"})
			if strings.Contains(w.Body.String(), "after close") {
				t.Fatal("a line was written after close")
			}
		})
	}
}

// A main result whose run goes on (post-run hooks, figures shown after
// it) is not held back until the end: the timer sends it.
func TestNDJSONMainResultNotHeldBack(t *testing.T) {
	t.Parallel()
	w := &flushCounter{ResponseRecorder: httptest.NewRecorder()}
	n := newNDJSON(w, time.Hour)
	defer n.close()
	n.emit(resultLine(map[string]json.RawMessage{"text/plain": json.RawMessage(`"2"`)}, true))
	deadline := time.Now().Add(10 * time.Second)
	for len(w.flushes()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the main result was never flushed while the run went on")
		}
		time.Sleep(time.Millisecond)
	}
	if f := w.flushes(); !strings.Contains(f[0], `"is_main_result":true`) {
		t.Fatalf("flushed %q", f[0])
	}
}

func TestReadSideLine(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"lines", "a\nbb\n", []string{"a", "bb"}},
		{"empty line", "\nx\n", []string{"", "x"}},
		{"at the limit", "12345678\nz\n", []string{"12345678", "z"}},
		{"over the limit is dropped, reading goes on", "123456789\nz\n", []string{string(tooLong), "z"}},
		{"much longer than the buffer", strings.Repeat("y", 100) + "\nz\n", []string{string(tooLong), "z"}},
		{"unterminated last line", "a\nb", []string{"a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rd := bufio.NewReaderSize(strings.NewReader(tc.in), 16)
			var got []string
			for {
				line, err := readSideLine(rd, 8)
				if err != nil {
					break
				}
				got = append(got, string(line))
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}
