package dashboard

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

type mux struct{ *http.ServeMux }

func (m mux) AddPublic(p string, h http.Handler) { m.Handle(p, h) }

// api stands in for the API behind the dashboard: it accepts one key and
// records what reached it.
type api struct {
	mu      sync.Mutex
	seen    []*http.Request
	revoked bool
}

const (
	goodKey   = "e2b_good"
	adminKey  = "sbx_admin_good"  // lists no sandboxes (no team), lists the nodes
	teamlessK = "sbx_admin_other" // 403 everywhere
)

func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.seen = append(a.seen, r)
	a.mu.Unlock()
	if r.Header.Get("E2b-Sandbox-Id") != "" { // sandbox traffic: the agent
		_, _ = io.WriteString(w, `{"agent":true}`)
		return
	}
	a.mu.Lock()
	revoked := a.revoked
	a.mu.Unlock()
	switch key := r.Header.Get("X-API-Key"); {
	case key == adminKey && r.URL.Path == "/nodes":
		_, _ = io.WriteString(w, `[{"nodeID":"node-1","status":"ready"}]`)
		return
	case key == adminKey || key == teamlessK:
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, `{"code":403,"message":"for a team key"}`)
		return
	}
	if r.Header.Get("X-API-Key") != goodKey || revoked {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"code":401,"message":"bad key"}`)
		return
	}
	if r.URL.Path == "/sandboxes/other" {
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"code":404,"message":"sandbox \"other\" not found"}`)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/sandboxes/") {
		_, _ = io.WriteString(w, `{"state":"running","envdAccessToken":"tok-1"}`)
		return
	}
	_, _ = io.WriteString(w, `[]`)
}

func (a *api) last() *http.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seen[len(a.seen)-1]
}

func TestAssets(t *testing.T) {
	m := mux{http.NewServeMux()}
	Register(m, &api{}, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(m)
	defer srv.Close()
	tests := []struct {
		path, ctype, contains string
		status                int
	}{
		{"/dashboard", "text/html", `<script src="/dashboard/app.js">`, 200},
		{"/dashboard/", "text/html", `id="sandboxes"`, 200},
		{"/dashboard/app.js", "javascript", `"X-CSRF-Token"`, 200},
		{"/dashboard/sandbox.js", "javascript", `process.Process/Start`, 200},
		{"/dashboard/templates.js", "javascript", `/tags`, 200},
		{"/dashboard/nodes.js", "javascript", `/nodes/`, 200},
		{"/dashboard/vendor/xterm/xterm.js", "javascript", `Terminal`, 200},
		{"/dashboard/vendor/xterm/xterm.css", "text/css", `.xterm`, 200},
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
		if tt.status == 200 && !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
			t.Errorf("%s: no CSP (assets are embedded; nothing loads from elsewhere)", tt.path)
		}
	}
	for _, f := range []string{"assets/app.js", "assets/sandbox.js", "assets/templates.js", "assets/nodes.js"} {
		js, _ := assets.ReadFile(f)
		// The page never builds HTML from data (sandbox metadata, file
		// names and build logs are user input).
		if strings.Contains(string(js), "innerHTML") {
			t.Errorf("%s uses innerHTML; build nodes with textContent instead", f)
		}
		// The key is not kept in the browser (issue 17).
		if strings.Contains(string(js), "localStorage") || strings.Contains(string(js), "sessionStorage") {
			t.Errorf("%s uses web storage; the session cookie is the only sign-in state", f)
		}
	}
}

// client is a browser-like client: a cookie jar, and the CSRF token the
// page would keep in memory.
type client struct {
	*http.Client
	base, csrf string
}

func newClient(t *testing.T, base string) *client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	return &client{Client: &http.Client{Jar: jar}, base: base}
}

func (c *client) do(t *testing.T, method, path, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// TestAdminSignIn: the admin key, which lists no team's sandboxes, signs
// in when it may list the nodes (its page is the nodes page); a key
// refused both ways does not.
func TestAdminSignIn(t *testing.T) {
	m := mux{http.NewServeMux()}
	Register(m, &api{}, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(m)
	defer srv.Close()
	for _, tt := range []struct {
		key    string
		status int
	}{{adminKey, 200}, {teamlessK, 401}, {goodKey, 200}} {
		c := newClient(t, srv.URL)
		resp, body := c.do(t, "POST", "/dashboard/session", `{"apiKey":"`+tt.key+`"}`)
		if resp.StatusCode != tt.status {
			t.Errorf("sign-in with %s: %d %s; want %d", tt.key, resp.StatusCode, body, tt.status)
			continue
		}
		if tt.key != adminKey {
			continue
		}
		var s sessionJSON
		_ = json.Unmarshal([]byte(body), &s)
		c.csrf = s.CSRFToken
		if resp, body := c.do(t, "GET", "/dashboard/api/nodes", "", "X-CSRF-Token", c.csrf); resp.StatusCode != 200 || !strings.Contains(body, "node-1") {
			t.Errorf("the admin's nodes through the dashboard: %d %s", resp.StatusCode, body)
		}
	}
}

func TestSession(t *testing.T) {
	backend := &api{}
	now := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	var clock sync.Mutex
	d := New(backend, time.Hour, func() time.Time { clock.Lock(); defer clock.Unlock(); return now }, slog.New(slog.DiscardHandler))
	m := mux{http.NewServeMux()}
	m.AddPublic("GET /dashboard", d)
	m.AddPublic("/dashboard/", d)
	srv := httptest.NewServer(m)
	defer srv.Close()
	c := newClient(t, srv.URL)

	// Without a session nothing reaches the API.
	if resp, _ := c.do(t, "GET", "/dashboard/api/v2/sandboxes", ""); resp.StatusCode != 401 {
		t.Fatalf("data call without a session: %d, want 401", resp.StatusCode)
	}
	if resp, body := c.do(t, "POST", "/dashboard/session", `{"apiKey":"e2b_wrong"}`); resp.StatusCode != 401 || !strings.Contains(body, "not accepted") {
		t.Fatalf("sign-in with a wrong key: %d %s", resp.StatusCode, body)
	}
	if resp, _ := c.do(t, "POST", "/dashboard/session", `{"apiKey":"`+goodKey+`"}`, "Origin", "https://evil.example"); resp.StatusCode != 403 {
		t.Fatalf("sign-in from another origin: %d, want 403", resp.StatusCode)
	}

	resp, body := c.do(t, "POST", "/dashboard/session", `{"apiKey":"`+goodKey+`"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("sign-in: %d %s", resp.StatusCode, body)
	}
	var s sessionJSON
	if err := json.Unmarshal([]byte(body), &s); err != nil || s.CSRFToken == "" || !s.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("sign-in answer %s: %v", body, err)
	}
	c.csrf = s.CSRFToken
	setCookie := resp.Header.Get("Set-Cookie")
	for _, want := range []string{cookieName + "=", "HttpOnly", "SameSite=Strict", "Path=/dashboard", "Max-Age=3600"} {
		if !strings.Contains(setCookie, want) {
			t.Errorf("Set-Cookie %q lacks %q", setCookie, want)
		}
	}
	if strings.Contains(setCookie, goodKey) || strings.Contains(body, goodKey) {
		t.Error("the API key went back to the browser")
	}
	if strings.Contains(setCookie, "Secure") {
		t.Error("Secure cookie over plain HTTP would never be sent back")
	}

	// GET: forwarded with the key, the cookie and routing headers dropped.
	resp, _ = c.do(t, "GET", "/dashboard/api/v2/sandboxes?limit=3", "", "E2b-Sandbox-Id", "abc", "E2b-Sandbox-Port", "49983")
	in := backend.last()
	if resp.StatusCode != 200 || in.URL.Path != "/v2/sandboxes" || in.URL.RawQuery != "limit=3" || in.Header.Get("X-API-Key") != goodKey ||
		in.Header.Get("Cookie") != "" || in.Header.Get("E2b-Sandbox-Id") != "" {
		t.Fatalf("forwarded GET: %d %s?%s headers %v", resp.StatusCode, in.URL.Path, in.URL.RawQuery, in.Header)
	}
	// State-changing calls need the CSRF token.
	if resp, _ := c.do(t, "DELETE", "/dashboard/api/sandboxes/x", ""); resp.StatusCode != 403 {
		t.Fatalf("DELETE without the CSRF token: %d, want 403", resp.StatusCode)
	}
	if resp, _ := c.do(t, "DELETE", "/dashboard/api/sandboxes/x", "", csrfHeader, "guess"); resp.StatusCode != 403 {
		t.Fatalf("DELETE with a wrong CSRF token: %d, want 403", resp.StatusCode)
	}
	if resp, _ := c.do(t, "DELETE", "/dashboard/api/sandboxes/x", "", csrfHeader, c.csrf, "Origin", "https://evil.example"); resp.StatusCode != 403 {
		t.Fatalf("DELETE from another origin: %d, want 403", resp.StatusCode)
	}
	if resp, _ := c.do(t, "DELETE", "/dashboard/api/sandboxes/x", "", csrfHeader, c.csrf, "Origin", srv.URL); resp.StatusCode != 200 || backend.last().Method != "DELETE" {
		t.Fatalf("DELETE with the token: %d", resp.StatusCode)
	}

	// The agent: only for a sandbox the key sees, with its token added here.
	resp, body = c.do(t, "POST", "/dashboard/envd/abc/filesystem.Filesystem/ListDir", `{"path":"/"}`, csrfHeader, c.csrf, "X-Access-Token", "forged")
	in = backend.last()
	if resp.StatusCode != 200 || body != `{"agent":true}` || in.URL.Path != "/filesystem.Filesystem/ListDir" || in.Header.Get("E2b-Sandbox-Id") != "abc" ||
		in.Header.Get("E2b-Sandbox-Port") != "49983" || in.Header.Get("X-Access-Token") != "tok-1" || in.Header.Get("X-API-Key") != "" {
		t.Fatalf("envd call: %d %s, reached %s with %v", resp.StatusCode, body, in.URL.Path, in.Header)
	}
	if resp, body := c.do(t, "POST", "/dashboard/envd/other/filesystem.Filesystem/ListDir", `{}`, csrfHeader, c.csrf); resp.StatusCode != 404 || backend.last().Header.Get("E2b-Sandbox-Id") != "" {
		t.Fatalf("envd call to a sandbox the key does not see: %d %s", resp.StatusCode, body)
	}

	// A reload gets the CSRF token back from the cookie.
	if resp, body := c.do(t, "GET", "/dashboard/session", ""); resp.StatusCode != 200 || !strings.Contains(body, c.csrf) {
		t.Fatalf("GET session: %d %s", resp.StatusCode, body)
	}
	// Expiry.
	clock.Lock()
	now = now.Add(time.Hour)
	clock.Unlock()
	if resp, _ := c.do(t, "GET", "/dashboard/api/v2/sandboxes", ""); resp.StatusCode != 401 {
		t.Fatalf("data call after expiry: %d, want 401", resp.StatusCode)
	}

	// A key revoked while signed in ends the session at its next call.
	c4 := newClient(t, srv.URL)
	if resp, body := c4.do(t, "POST", "/dashboard/session", `{"apiKey":"`+goodKey+`"}`); resp.StatusCode != 200 {
		t.Fatalf("sign-in: %d %s", resp.StatusCode, body)
	}
	backend.mu.Lock()
	backend.revoked = true
	backend.mu.Unlock()
	if resp, _ := c4.do(t, "GET", "/dashboard/api/v2/sandboxes", ""); resp.StatusCode != 401 {
		t.Fatalf("data call with a revoked key: %d, want 401", resp.StatusCode)
	}
	backend.mu.Lock()
	backend.revoked = false
	backend.mu.Unlock()
	if resp, _ := c4.do(t, "GET", "/dashboard/session", ""); resp.StatusCode != 401 {
		t.Fatalf("the session of a revoked key lives on: GET session %d, want 401", resp.StatusCode)
	}

	// Sign out ends the session on the server, not just in the browser.
	clock.Lock()
	now = now.Add(-time.Hour)
	clock.Unlock()
	c2 := newClient(t, srv.URL)
	_, body = c2.do(t, "POST", "/dashboard/session", `{"apiKey":"`+goodKey+`"}`)
	_ = json.Unmarshal([]byte(body), &s)
	cookies := c2.Jar.Cookies(resp.Request.URL)
	if resp, _ := c2.do(t, "DELETE", "/dashboard/session", "", csrfHeader, s.CSRFToken); resp.StatusCode != 204 {
		t.Fatalf("sign out: %d", resp.StatusCode)
	}
	c3 := newClient(t, srv.URL)
	u := *resp.Request.URL
	u.Path = "/dashboard/"
	c3.Jar.SetCookies(&u, cookies) // the old cookie, replayed
	if resp, _ := c3.do(t, "GET", "/dashboard/api/v2/sandboxes", ""); resp.StatusCode != 401 {
		t.Fatalf("replayed cookie after sign-out: %d, want 401", resp.StatusCode)
	}
}

// Over TLS the session cookie is Secure, so the browser never sends it in
// the clear.
func TestSessionCookieSecureOverTLS(t *testing.T) {
	m := mux{http.NewServeMux()}
	Register(m, &api{}, slog.New(slog.DiscardHandler))
	srv := httptest.NewTLSServer(m)
	defer srv.Close()
	resp, err := srv.Client().Post(srv.URL+"/dashboard/session", "application/json", strings.NewReader(`{"apiKey":"`+goodKey+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if c := resp.Header.Get("Set-Cookie"); resp.StatusCode != 200 || !strings.Contains(c, "; Secure") {
		t.Fatalf("sign-in over TLS: %d, Set-Cookie %q: want Secure", resp.StatusCode, c)
	}
}
