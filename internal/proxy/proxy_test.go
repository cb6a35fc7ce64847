package proxy

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestMatch(t *testing.T) {
	p := New(nil, "sbx.test", slog.New(slog.DiscardHandler))
	tests := []struct {
		name    string
		host    string
		headers map[string]string
		want    Target
		match   bool
		wantErr bool
	}{
		{"api request", "127.0.0.1:3000", nil, Target{}, false, false},
		{"headers", "127.0.0.1:3000", map[string]string{"E2b-Sandbox-Id": "abc123", "E2b-Sandbox-Port": "49983"}, Target{"abc123", 49983}, true, false},
		{"header id only", "localhost", map[string]string{"E2b-Sandbox-Id": "abc"}, Target{}, true, true},
		{"bad port", "localhost", map[string]string{"E2b-Sandbox-Id": "abc", "E2b-Sandbox-Port": "http"}, Target{}, true, true},
		{"bad id", "localhost", map[string]string{"E2b-Sandbox-Id": "ABC-1", "E2b-Sandbox-Port": "80"}, Target{}, true, true},
		{"host routing", "8080-abc123.sbx.test", nil, Target{"abc123", 8080}, true, false},
		{"host routing with port", "49999-xyz.sbx.test:3000", nil, Target{"xyz", 49999}, true, false},
		{"other domain", "8080-abc.example.com", nil, Target{}, false, false},
		{"api host of domain", "api.sbx.test", nil, Target{}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://"+tt.host+"/health", nil)
			r.Host = tt.host
			for k, v := range tt.headers {
				r.Header.Set(k, v)
			}
			got, match, err := p.Match(r)
			if match != tt.match || (err != nil) != tt.wantErr || (err == nil && got != tt.want) {
				t.Fatalf("Match = %+v, %v, %v; want %+v, %v, err=%v", got, match, err, tt.want, tt.match, tt.wantErr)
			}
		})
	}
}

type routes map[string]http.RoundTripper

func (r routes) Route(id string) (http.RoundTripper, bool) { rt, ok := r[id]; return rt, ok }

// A sandbox the router does not know answers 502 with E2B's JSON body, which
// SDKs read as "killed or timed out".
func TestServeUnknownSandbox(t *testing.T) {
	p := New(routes{}, "", slog.New(slog.DiscardHandler))
	rec := httptest.NewRecorder()
	p.Serve(rec, httptest.NewRequest("GET", "/health", nil), Target{SandboxID: "gone", Port: EnvdPort})
	if rec.Code != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", rec.Code)
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if body["sandboxId"] != "gone" || body["message"] != "The sandbox was not found" || body["code"] != float64(502) {
		t.Fatalf("body %v", body)
	}
}

// Requests for non-agent ports carry X-Sbx-Port; a client-supplied one is replaced.
func TestServeForwardsPortHeader(t *testing.T) {
	var gotPort, gotPath string
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPort, gotPath = r.Header.Get("X-Sbx-Port"), r.URL.Path
		io.WriteString(w, "ok")
	}))
	defer backend.Close()
	tr := &rewriteTransport{target: backend.URL}
	p := New(routes{"abc": tr}, "", slog.New(slog.DiscardHandler))
	for _, tt := range []struct {
		port int
		want string
	}{{8000, "8000"}, {EnvdPort, ""}} {
		req := httptest.NewRequest("GET", "/x", nil)
		req.Header.Set("X-Sbx-Port", "1")
		rec := httptest.NewRecorder()
		p.Serve(rec, req, Target{SandboxID: "abc", Port: tt.port})
		if rec.Code != 200 || gotPort != tt.want || gotPath != "/x" {
			t.Fatalf("port %d: status %d, X-Sbx-Port %q (want %q), path %q", tt.port, rec.Code, gotPort, tt.want, gotPath)
		}
	}
	rec := httptest.NewRecorder()
	p.Serve(rec, httptest.NewRequest("POST", "/init", nil), Target{SandboxID: "abc", Port: EnvdPort})
	if rec.Code != http.StatusNotFound {
		t.Fatalf("/init through the proxy: status %d, want 404", rec.Code)
	}
}

type rewriteTransport struct{ target string }

func (rt *rewriteTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	u := *r.URL
	u.Scheme, u.Host = "http", rt.target[len("http://"):]
	r2 := r.Clone(r.Context())
	r2.URL = &u
	return http.DefaultTransport.RoundTrip(r2)
}

// A sandbox's answer on the control plane's origin (which serves the
// dashboard) is sandboxed by CSP, so an HTML file from a sandbox cannot
// act as that origin; on a sandbox's own host name it is left alone (web
// apps in sandboxes run there).
func TestServeSandboxesAnswersOnTheAPIOrigin(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<script>fetch('/dashboard/session')</script>")
	}))
	defer backend.Close()
	p := New(routes{"abc": &rewriteTransport{target: backend.URL}}, "sbx.example", slog.New(slog.DiscardHandler))
	for _, tt := range []struct {
		host, csp string
	}{{"api.example:3000", "sandbox"}, {"127.0.0.1:3000", "sandbox"}, {"49983-abc.sbx.example", ""}} {
		req := httptest.NewRequest("GET", "/files?path=/x.html", nil)
		req.Host = tt.host
		rec := httptest.NewRecorder()
		p.Serve(rec, req, Target{SandboxID: "abc", Port: EnvdPort})
		if rec.Code != 200 || rec.Header().Get("Content-Security-Policy") != tt.csp {
			t.Errorf("host %s: status %d, CSP %q, want %q", tt.host, rec.Code, rec.Header().Get("Content-Security-Policy"), tt.csp)
		}
	}
}
