package proxy

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

type failingTransport struct{}

func (failingTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("connection refused")
}

// A sandbox that cannot be reached answers like one that is gone: 502 with
// E2B's body naming the sandbox.
func TestServeTransportError(t *testing.T) {
	t.Parallel()
	p := New(routes{"abc": failingTransport{}}, "", slog.New(slog.DiscardHandler))
	rec := httptest.NewRecorder()
	p.Serve(rec, httptest.NewRequest("GET", "/health", nil), Target{SandboxID: "abc", Port: 8080})
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != http.StatusBadGateway || body["sandboxId"] != "abc" {
		t.Fatalf("status %d, body %q (%v); want 502 naming abc", rec.Code, rec.Body, err)
	}
}

// What reaches the sandbox: the client's Host, no client X-Forwarded-For,
// no cluster signature; and what comes back streams, each flushed write
// reaching the client while the sandbox is still answering.
func TestServeHeadersAndStreaming(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	got := make(chan http.Header, 1)
	gotHost := make(chan string, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		gotHost <- r.Host
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "second\n")
	}))
	defer backend.Close()
	defer close(release)
	p := New(routes{"abc": &rewriteTransport{target: backend.URL}}, "sbx.example", slog.New(slog.DiscardHandler))
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.Serve(w, r, Target{SandboxID: "abc", Port: 3000})
	}))
	defer front.Close()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", front.URL+"/stream", nil)
	req.Host = "3000-abc.sbx.example"
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	req.Header.Set(ClusterAuthHeader, "forged")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first line %q, %v: not streamed", line, err)
	}
	h := <-got
	if h.Get(ClusterAuthHeader) != "" || h.Get("X-Sbx-Port") != "3000" {
		t.Errorf("sandbox saw %v", h)
	}
	if xff := h.Values("X-Forwarded-For"); len(xff) != 0 {
		t.Errorf("sandbox saw X-Forwarded-For %q", xff)
	}
	if host := <-gotHost; host != "3000-abc.sbx.example" {
		t.Errorf("sandbox saw Host %q", host)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); csp != "" {
		t.Errorf("host-routed answer got CSP %q", csp)
	}
}
