package telemetry

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
)

func TestRequestID(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", maxRequestIDLen+1)
	for _, tt := range []struct {
		in   string
		keep bool
	}{
		{"abc-123", true},
		{"0af7651916cd43dd8448eb211c80319c", true},
		{"svc/req:42_x.y", true},
		{strings.Repeat("a", maxRequestIDLen), true},
		{"", false},
		{long, false},
		{"has space", false},
		{"quote\"", false},
		{"new\nline", false},
		{"ünïcode", false},
	} {
		got := requestID(tt.in)
		if tt.keep != (got == tt.in) {
			t.Errorf("requestID(%q) = %q; keep = %v", tt.in, got, tt.keep)
		}
		if !tt.keep && (len(got) < 16 || requestID(got) != got) {
			t.Errorf("requestID(%q) made %q, which is not itself a sane ID", tt.in, got)
		}
	}
	if requestID("") == requestID("") {
		t.Error("two made IDs are equal")
	}
}

type observed struct {
	mu    sync.Mutex
	calls []string
}

func (o *observed) ObserveHTTP(route string, code int, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, route+" "+http.StatusText(code))
}

// logLines parses JSON log lines.
func logLines(t *testing.T, buf *syncBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestMiddleware serves real HTTP: every line a request logs carries its
// ID, the error it was answered with lands in its access log line, and
// the observer hears of it under its route.
func TestMiddleware(t *testing.T) {
	t.Parallel()
	buf := &syncBuffer{}
	log := slog.New(LogHandler(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	obs := &observed{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /things/{id}", func(w http.ResponseWriter, r *http.Request) {
		log.InfoContext(r.Context(), "looking", "thing", r.PathValue("id"))
		Logger(r.Context(), log).Info("plain call")
		errdefs.WriteHTTP(w, log, errdefs.NotFound("thing %s not found", r.PathValue("id")))
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pattern := mux.Handler(r)
		SetRoute(r.Context(), pattern)
		mux.ServeHTTP(w, r)
	})
	mw := &Middleware{Log: log, Observer: obs, Quiet: map[string]bool{"GET /health": true}}
	srv := httptest.NewServer(mw.Wrap(h))
	defer srv.Close()

	req, _ := http.NewRequest("GET", srv.URL+"/things/x1", nil)
	req.Header.Set(RequestIDHeader, "req-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 || resp.Header.Get(RequestIDHeader) != "req-1" {
		t.Fatalf("status %d, %s %q", resp.StatusCode, RequestIDHeader, resp.Header.Get(RequestIDHeader))
	}
	resp, err = http.Get(srv.URL + "/nowhere")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp, err = http.Get(srv.URL + "/health"); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	lines := logLines(t, buf)
	byMsg := map[string][]map[string]any{}
	for _, l := range lines {
		byMsg[l["msg"].(string)] = append(byMsg[l["msg"].(string)], l)
	}
	for _, msg := range []string{"looking", "plain call", "request failed"} {
		if len(byMsg[msg]) != 1 || byMsg[msg][0][RequestIDKey] != "req-1" {
			t.Errorf("%q lines: %v; want one with request.id req-1", msg, byMsg[msg])
		}
	}
	access := byMsg["http request"]
	if len(access) != 3 {
		t.Fatalf("access lines: %v", access)
	}
	if a := access[0]; a[RequestIDKey] != "req-1" || a["route"] != "GET /things/{id}" || a["status"] != 404.0 ||
		a["err"] != "thing x1 not found" || a["level"] != "INFO" {
		t.Errorf("access line of the failed request: %v", a)
	}
	if a := access[1]; a["route"] != "unmatched" || a["status"] != 404.0 || a[RequestIDKey] == "" || a[RequestIDKey] == "req-1" {
		t.Errorf("access line of an unrouted request: %v", a)
	}
	if a := access[2]; a["level"] != "DEBUG" || a["route"] != "GET /health" {
		t.Errorf("a quiet route logs at debug: %v", a)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if want := []string{"GET /things/{id} Not Found", "unmatched Not Found", "GET /health OK"}; strings.Join(obs.calls, ",") != strings.Join(want, ",") {
		t.Errorf("observed %v, want %v", obs.calls, want)
	}
}

// TestMiddlewarePassesStreams: flushing and hijacking (event streams and
// WebSockets through the proxy) work through the middleware's writer.
func TestMiddlewarePassesStreams(t *testing.T) {
	t.Parallel()
	obs := &observed{}
	mw := &Middleware{Log: slog.New(slog.DiscardHandler), Observer: obs}
	srv := httptest.NewServer(mw.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		SetRoute(r.Context(), r.URL.Path)
		if r.URL.Path == "/flush" {
			io.WriteString(w, "first\n")
			if err := http.NewResponseController(w).Flush(); err != nil {
				t.Errorf("flush: %v", err)
			}
			<-r.Context().Done()
			return
		}
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer c.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\nhello")
		rw.Flush()
	})))
	defer srv.Close()

	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/flush", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("flushed line %q, %v", line, err)
	}
	cancel()
	resp.Body.Close()

	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	srv.Close() // waits for the handlers
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if strings.Join(obs.calls, ",") != "/flush OK,/upgrade Switching Protocols" && strings.Join(obs.calls, ",") != "/upgrade Switching Protocols,/flush OK" {
		t.Errorf("observed %v", obs.calls)
	}
}

// TestTracingOff: with no endpoint, nothing is set up and spans cost
// nothing: Start hands back the caller's context.
func TestTracingOff(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	tr, err := Setup(t.Context(), Config{}, slog.New(slog.DiscardHandler))
	if err != nil || tr.Enabled() {
		t.Fatalf("Setup without an endpoint: %v, enabled %v", err, tr.Enabled())
	}
	ctx := context.WithValue(t.Context(), infoKey{}, &info{id: "x"})
	got, span := Start(ctx, "op")
	if got != ctx || span.IsRecording() {
		t.Error("Start with tracing off made a span")
	}
	if err := (Config{OTLPEndpoint: "collector:4318"}).Validate(); err == nil || !strings.Contains(err.Error(), "--otlp-endpoint") {
		t.Errorf("an endpoint without a scheme: %v", err)
	}
}

// TestTracingFromEnvironment: the standard OTEL_EXPORTER_OTLP_ENDPOINT
// turns tracing on without the flag; the server span of a request and a
// child started with Start reach the collector by Shutdown.
func TestTracingFromEnvironment(t *testing.T) {
	var mu sync.Mutex
	posts := 0
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/traces" {
			mu.Lock()
			posts++
			mu.Unlock()
		}
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	tr, err := Setup(t.Context(), Config{}, slog.New(slog.DiscardHandler))
	if err != nil || !tr.Enabled() {
		t.Fatalf("Setup with OTEL_EXPORTER_OTLP_ENDPOINT: %v, enabled %v", err, tr.Enabled())
	}
	var child bool
	h := (&Middleware{Log: slog.New(slog.DiscardHandler), Tracing: tr}).Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, span := Start(r.Context(), "step")
		child = span.IsRecording()
		span.End()
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/x", nil))
	if err := tr.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !child || posts == 0 {
		t.Errorf("child span recording %v, %d exports", child, posts)
	}
}
