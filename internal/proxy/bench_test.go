package proxy

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// cannedTransport answers every request at once from memory, so a
// benchmark through it measures the proxy's own work, not a network.
type cannedTransport struct{}

func (cannedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	return &http.Response{
		StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(strings.NewReader(`{"ok":true}`)),
		ContentLength: 11, Request: r,
	}, nil
}

// The proxy's cost per forwarded request (an RPC with a small body, as
// envd's are), excluding the sandbox's answer time.
func BenchmarkServe(b *testing.B) {
	p := New(routes{"abc": cannedTransport{}}, "sbx.test", slog.New(slog.DiscardHandler))
	for _, bc := range []struct {
		name string
		t    Target
		host string
	}{
		{"envd", Target{SandboxID: "abc", Port: EnvdPort}, "api.sbx.test"},
		{"port", Target{SandboxID: "abc", Port: 8080}, "8080-abc.sbx.test"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest("POST", "/process.Process/Start", strings.NewReader(`{"cmd":"echo"}`))
				req.Host = bc.host
				rec := httptest.NewRecorder()
				p.Serve(rec, req, bc.t)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d", rec.Code)
				}
			}
		})
	}
}
