package request

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
)

var testDeadlines = Deadlines{Grace: 300 * time.Millisecond, MinRate: 1000, Idle: time.Second}

// server decodes bodies, then streams "tick" lines for stream long.
func server(t *testing.T, stream time.Duration) *httptest.Server {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var v map[string]any
		if r.Method == "POST" {
			if err := Decode(r, &v, MaxBody); err != nil {
				errdefs.WriteHTTP(w, nil, err)
				return
			}
		}
		w.WriteHeader(200)
		for end := time.Now().Add(stream); time.Now().Before(end); {
			fmt.Fprintln(w, "tick")
			w.(http.Flusher).Flush()
			time.Sleep(50 * time.Millisecond)
		}
		fmt.Fprintln(w, "done")
	})
	s := httptest.NewServer(BodyDeadline(testDeadlines, h))
	t.Cleanup(s.Close)
	return s
}

func TestSlowBodyIsCut(t *testing.T) {
	t.Parallel()
	s := server(t, 0)
	conn, err := net.Dial("tcp", s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
	done := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(conn)
		done <- string(b)
	}()
	start := time.Now()
	for {
		select {
		case answer := <-done:
			if took := time.Since(start); took > 5*time.Second { // generous: a loaded machine

				t.Errorf("cut after %v, want about %v", took, testDeadlines.Grace)
			}
			if !strings.Contains(answer, "400 Bad Request") || !strings.Contains(answer, "too slowly") {
				t.Errorf("answer %q: want a 400 saying the body was too slow", answer)
			}
			return
		case <-time.After(100 * time.Millisecond):
			if time.Since(start) > 15*time.Second {
				t.Fatal("a body trickling a byte every 100 ms is still read after 15 s")
			}
			_, _ = conn.Write([]byte(" "))
		}
	}
}

func TestStalledBodyIsCut(t *testing.T) {
	t.Parallel()
	s := server(t, 0)
	conn, err := net.Dial("tcp", s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Fast at first (credit for a long time at the minimum rate), then
	// silent: the idle limit still applies.
	body := `{"a": "` + strings.Repeat("x", 100_000)
	fmt.Fprintf(conn, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body)+10, body)
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	b, _ := io.ReadAll(conn)
	if took := time.Since(start); took > testDeadlines.Idle+4*time.Second { // generous: a loaded machine
		t.Errorf("a stalled body was cut after %v, want about %v", took, testDeadlines.Idle)
	}
	if !strings.Contains(string(b), "400") {
		t.Errorf("answer %q, want a 400", b)
	}
}

func TestLongResponsesAreNotCut(t *testing.T) {
	t.Parallel()
	stream := 4 * testDeadlines.Idle
	s := server(t, stream)
	for _, method := range []string{"GET", "POST"} {
		t.Run(method, func(t *testing.T) {
			t.Parallel()
			var body io.Reader
			if method == "POST" {
				body = strings.NewReader(`{"big": "` + strings.Repeat("y", 200_000) + `"}`)
			}
			req, _ := http.NewRequestWithContext(t.Context(), method, s.URL, body)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var last string
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				last = sc.Text()
			}
			if resp.StatusCode != 200 || last != "done" {
				t.Errorf("%s streaming %v: status %d, last line %q (err %v); want the whole stream", method, stream, resp.StatusCode, last, sc.Err())
			}
		})
	}
}
