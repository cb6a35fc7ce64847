package dashboard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type mux struct{ *http.ServeMux }

func (m mux) AddPublic(p string, h http.Handler) { m.Handle(p, h) }

func TestAssets(t *testing.T) {
	m := mux{http.NewServeMux()}
	Register(m)
	srv := httptest.NewServer(m)
	defer srv.Close()
	tests := []struct {
		path, ctype, contains string
		status                int
	}{
		{"/dashboard", "text/html", `<script src="/dashboard/app.js">`, 200},
		{"/dashboard/", "text/html", `id="sandboxes"`, 200},
		{"/dashboard/app.js", "javascript", `"X-API-Key"`, 200},
		{"/dashboard/style.css", "text/css", "table", 200},
		{"/dashboard/nope.js", "", "", 404},
	}
	for _, tt := range tests {
		resp, err := http.Get(srv.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || !strings.Contains(resp.Header.Get("Content-Type"), tt.ctype) || !strings.Contains(string(b), tt.contains) {
			t.Errorf("%s: %d %q, want %d %q containing %q", tt.path, resp.StatusCode, resp.Header.Get("Content-Type"), tt.status, tt.ctype, tt.contains)
		}
		if tt.status == 200 && !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("%s: no CSP (assets are embedded; nothing loads from elsewhere)", tt.path)
		}
	}
	// The page never builds HTML from data (sandbox metadata is user input).
	js, _ := assets.ReadFile("assets/app.js")
	if strings.Contains(string(js), "innerHTML") {
		t.Error("app.js uses innerHTML; build nodes with textContent instead")
	}
}
