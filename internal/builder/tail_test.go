package builder

import (
	"strings"
	"testing"
)

func TestTailer(t *testing.T) {
	t.Parallel()
	const mark = "sbx-step-end-0123"
	long := strings.Repeat("x", maxLine+100)
	for _, tc := range []struct {
		name, in string
		lines    []string
		done     bool
		code     int
	}{
		{"ends with the mark", "a\nb\n\n" + mark + " 0\nafter\n", []string{"a", "b"}, true, 0},
		{"unterminated last line", "a\nno newline\n" + mark + " 3\n", []string{"a", "no newline"}, true, 3},
		{"blank lines kept", "a\n\n\nb\n\n" + mark + " 0\n", []string{"a", "", "", "b"}, true, 0},
		{"forged mark without the secret", "sbx-step-end-ffff 0\n", []string{"sbx-step-end-ffff 0"}, false, 0},
		{"mark needs a code", mark + " x\n", []string{mark + " x"}, false, 0},
		{"long line cut", long + "\n" + mark + " 0\n", []string{long[:maxLine] + " [line cut at 4 KiB]"}, true, 0},
		{"progress bar", "10%\r50%\r100%\n", []string{"100%"}, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			tl := &tailer{r: strings.NewReader(tc.in), line: func(s string) { got = append(got, s) }, mark: []byte(mark)}
			tl.poll()
			if !tl.done {
				tl.flush()
			}
			if strings.Join(got, "|") != strings.Join(tc.lines, "|") || tl.done != tc.done || tl.code != tc.code {
				t.Errorf("lines %q done %v code %d; want %q %v %d", got, tl.done, tl.code, tc.lines, tc.done, tc.code)
			}
		})
	}
}

// TestTailerSplitReads: the mark is found across reads of any size.
func TestTailerSplitReads(t *testing.T) {
	t.Parallel()
	const mark = "sbx-step-end-0123"
	in := "out\n\n" + mark + " 7\n"
	for size := 1; size <= len(in); size++ {
		var got []string
		tl := &tailer{line: func(s string) { got = append(got, s) }, mark: []byte(mark)}
		for i := 0; i < len(in); i += size {
			tl.feed([]byte(in[i:min(len(in), i+size)]))
		}
		if !tl.done || tl.code != 7 || strings.Join(got, "|") != "out" {
			t.Fatalf("reads of %d bytes: lines %q done %v code %d", size, got, tl.done, tl.code)
		}
	}
}
