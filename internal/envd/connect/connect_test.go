package connect

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s mismatch:\n got %q\nwant %q", name, got, want)
	}
}

type echoReq struct {
	Text string `json:"text"`
	N    int64  `json:"n,string,omitempty"`
}

func TestStreamFramingGolden(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		fn   func(context.Context, *http.Request, *echoReq, *Stream) error
	}{
		{"stream_ok.golden", func(ctx context.Context, r *http.Request, req *echoReq, s *Stream) error {
			if err := s.Send(map[string]any{"event": map[string]any{"start": map[string]any{"pid": 412}}}); err != nil {
				return err
			}
			if err := s.Send(map[string]any{"event": map[string]any{"data": map[string]any{"stdout": []byte(req.Text)}}}); err != nil {
				return err
			}
			return s.Send(map[string]any{"event": map[string]any{"end": map[string]any{"exited": true, "status": "exit status 0"}}})
		}},
		{"stream_error.golden", func(ctx context.Context, r *http.Request, req *echoReq, s *Stream) error {
			return Errorf(NotFound, "process with pid %d not found", req.N)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(ServerStream(tt.fn))
			defer srv.Close()
			body := AppendEnvelope(nil, 0, []byte(`{"text":"hi\n","n":"7","unknownField":true}`))
			resp, err := http.Post(srv.URL, StreamContentType, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != StreamContentType {
				t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			got, _ := io.ReadAll(resp.Body)
			golden(t, tt.name, got)
		})
	}
}

func TestUnary(t *testing.T) {
	t.Parallel()
	h := Unary(func(ctx context.Context, r *http.Request, req *echoReq) (*echoReq, error) {
		switch req.Text {
		case "missing":
			return nil, Errorf(NotFound, "no such thing")
		case "boom":
			return nil, io.ErrUnexpectedEOF
		case "deadline":
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return &echoReq{Text: strings.ToUpper(req.Text)}, nil
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	tests := []struct {
		name, ctype, body string
		header            map[string]string
		status            int
		want              string
	}{
		{"ok with unknown field", "application/json", `{"text":"hi","extra":1}`, nil, 200, `{"text":"HI"}`},
		{"empty body is empty message", "application/json", ``, nil, 200, `{"text":""}`},
		{"charset parameter", "application/json; charset=utf-8", `{"text":"a"}`, nil, 200, `{"text":"A"}`},
		{"not found", "application/json", `{"text":"missing"}`, nil, 404, `{"code":"not_found","message":"no such thing"}`},
		{"internal", "application/json", `{"text":"boom"}`, nil, 500, `{"code":"internal","message":"unexpected EOF"}`},
		{"bad json", "application/json", `{"text":`, nil, 400, `"code":"invalid_argument"`},
		{"wrong content type", "application/proto", `x`, nil, 415, `application/json`},
		{"deadline", "application/json", `{"text":"deadline"}`, map[string]string{"Connect-Timeout-Ms": "20"}, 504, `"code":"deadline_exceeded"`},
		{"bad timeout", "application/json", `{}`, map[string]string{"Connect-Timeout-Ms": "soon"}, 400, `Connect-Timeout-Ms`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, _ := http.NewRequest("POST", srv.URL, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", tt.ctype)
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status || !strings.Contains(string(b), tt.want) {
				t.Errorf("got %d %s, want %d containing %s", resp.StatusCode, b, tt.status, tt.want)
			}
		})
	}
}

func TestCodeHTTPStatus(t *testing.T) {
	t.Parallel()
	want := map[Code]int{
		Canceled: 499, Unknown: 500, InvalidArgument: 400, DeadlineExceeded: 504, NotFound: 404,
		AlreadyExists: 409, PermissionDenied: 403, ResourceExhausted: 429, FailedPrecondition: 400,
		Aborted: 409, Unimplemented: 404, Internal: 500, Unavailable: 503, Unauthenticated: 401,
	}
	for c, s := range want {
		if got := c.HTTPStatus(); got != s {
			t.Errorf("%s → %d, want %d", c, got, s)
		}
	}
}

func TestStreamKeepalive(t *testing.T) {
	t.Parallel()
	h := ServerStream(func(ctx context.Context, r *http.Request, req *echoReq, s *Stream) error {
		if err := s.Send(map[string]string{"m": "start"}); err != nil {
			return err
		}
		select {
		case <-s.Keepalive():
			return s.Send(map[string]any{"keepalive": struct{}{}})
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest("POST", srv.URL, bytes.NewReader(AppendEnvelope(nil, 0, []byte(`{}`))))
	req.Header.Set("Content-Type", StreamContentType)
	req.Header.Set("Keepalive-Ping-Interval", "1")
	req.Header.Set("Connect-Timeout-Ms", "30000")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var msgs []string
	for {
		flags, payload, err := readEnvelope(resp.Body)
		if err != nil {
			break
		}
		msgs = append(msgs, string(payload))
		if flags&FlagEndStream != 0 {
			break
		}
	}
	want := []string{`{"m":"start"}`, `{"keepalive":{}}`, `{}`}
	if strings.Join(msgs, " ") != strings.Join(want, " ") {
		t.Errorf("messages %q, want %q", msgs, want)
	}
}

func TestStreamTimeoutEndsWithDeadlineExceeded(t *testing.T) {
	t.Parallel()
	h := ServerStream(func(ctx context.Context, r *http.Request, req *echoReq, s *Stream) error {
		<-ctx.Done()
		return ctx.Err()
	})
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest("POST", srv.URL, bytes.NewReader(AppendEnvelope(nil, 0, []byte(`{}`))))
	req.Header.Set("Content-Type", StreamContentType)
	req.Header.Set("Connect-Timeout-Ms", "10")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	flags, payload, err := readEnvelope(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var end struct{ Error *Error }
	_ = json.Unmarshal(payload, &end)
	if flags != FlagEndStream || end.Error == nil || end.Error.Code != DeadlineExceeded {
		t.Errorf("end envelope %d %s", flags, payload)
	}
}

func TestTimeoutParsing(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		v    string
		want time.Duration
		err  bool
	}{{"", 0, false}, {"0", 0, false}, {"60000", time.Minute, false}, {"-1", 0, true}, {"x", 0, true}} {
		r := httptest.NewRequest("POST", "/", nil)
		if tt.v != "" {
			r.Header.Set("Connect-Timeout-Ms", tt.v)
		}
		got, err := Timeout(r)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("Timeout(%q) = %v, %v", tt.v, got, err)
		}
	}
}
