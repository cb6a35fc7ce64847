// Package dashboard serves sbx's dashboard: one page with its script, style
// and xterm.js embedded in the binary (nothing loads from a CDN).
//
// Sign-in: the page POSTs the team API key once to /dashboard/session; the
// server checks it against the API, keeps it in memory and answers with an
// HttpOnly, SameSite=Strict session cookie (Secure over TLS) and a CSRF
// token the page keeps in memory. The raw key is never stored in the
// browser. Every data call goes to /dashboard/api/<API path>, which the
// server forwards to the API with the session's key, so the dashboard sees
// exactly what that key sees (its own team) through the same
// authentication; /dashboard/envd/<sandbox>/<RPC> does the same for a
// sandbox's agent (files, PTY terminal), adding the sandbox's access token
// on the server side after the key has been shown to own it.
package dashboard

import (
	"embed"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/request"
)

//go:embed assets
var assets embed.FS

// Public is where routes without an API key go (*api.Server).
type Public interface {
	AddPublic(pattern string, h http.Handler)
}

// DefaultSessionTTL is how long a sign-in lasts.
const DefaultSessionTTL = 12 * time.Hour

// Dashboard serves the page and its session-authenticated API bridge.
type Dashboard struct {
	backend  http.Handler // the API (authenticates X-API-Key itself)
	sessions *sessions
	files    http.Handler
	log      *slog.Logger
}

// New returns a dashboard whose data calls go to backend with the signed-in
// key. now is the clock (time.Now when nil).
func New(backend http.Handler, ttl time.Duration, now func() time.Time, log *slog.Logger) *Dashboard {
	if now == nil {
		now = time.Now
	}
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	sub, _ := fs.Sub(assets, "assets")
	return &Dashboard{backend: backend, sessions: newSessions(ttl, now), log: log,
		files: http.StripPrefix("/dashboard/", http.FileServerFS(sub))}
}

// Register adds the dashboard routes to p, forwarding data calls to
// backend.
func Register(p Public, backend http.Handler, log *slog.Logger) {
	d := New(backend, 0, nil, log)
	p.AddPublic("GET /dashboard", d)
	// One pattern per method: a method-less "/dashboard/" would conflict
	// with a "POST /" catch-all (sbx monitor's webhook intake).
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		p.AddPublic(m+" /dashboard/", d)
	}
}

// csp: scripts only from here. Styles allow 'unsafe-inline' because
// xterm.js sizes its rows with a <style> element it creates; no data ever
// becomes markup (the script builds nodes with textContent), so inline
// style is the only inline thing there is.
const csp = "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == "/dashboard/session":
		d.session(w, r)
	case strings.HasPrefix(p, "/dashboard/api/"):
		d.forwardAPI(w, r)
	case strings.HasPrefix(p, "/dashboard/envd/"):
		d.forwardEnvd(w, r)
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		errdefs.WriteHTTP(w, d.log, errdefs.NotFound("no such endpoint: %s %s", r.Method, p))
	default:
		// The page is small and changes with the binary: no stale caches.
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", csp)
		if p == "/dashboard" || p == "/dashboard/" {
			b, _ := assets.ReadFile("assets/index.html")
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write(b)
			return
		}
		d.files.ServeHTTP(w, r)
	}
}

// sessionJSON is what the page learns about its sign-in.
type sessionJSON struct {
	CSRFToken string    `json:"csrfToken"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// session: POST signs in with {"apiKey"}, GET tells the page whether its
// cookie is still signed in (and its CSRF token), DELETE signs out.
func (d *Dashboard) session(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	switch r.Method {
	case http.MethodPost:
		if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host && o != "https://"+r.Host {
			errdefs.WriteHTTP(w, d.log, errdefs.Denied("sign-in from another origin (%s) is refused", o))
			return
		}
		var body struct {
			APIKey string `json:"apiKey"`
		}
		if err := request.Decode(r, &body, 4<<10); err != nil {
			errdefs.WriteHTTP(w, d.log, err)
			return
		}
		key := strings.TrimSpace(body.APIKey)
		if key == "" {
			errdefs.WriteHTTP(w, d.log, errdefs.Invalid("apiKey is required: paste a team API key (e2b_…)"))
			return
		}
		if status := d.check(r, key); status != http.StatusOK {
			if status == http.StatusUnauthorized || status == http.StatusForbidden {
				errdefs.WriteHTTP(w, d.log, errdefs.Unauthenticated("the API key was not accepted: check it, or create one with `sbx key create`"))
			} else {
				errdefs.WriteStatus(w, http.StatusBadGateway, "the API could not check the key (HTTP "+http.StatusText(status)+"); try again")
			}
			return
		}
		id, se := d.sessions.create(key)
		setCookie(w, r, id, int(se.expires.Sub(d.sessions.now()).Seconds()))
		errdefs.WriteJSON(w, http.StatusOK, sessionJSON{CSRFToken: se.csrf, ExpiresAt: se.expires.UTC()})
	case http.MethodGet:
		_, se, ok := d.sessions.get(r)
		if !ok {
			errdefs.WriteHTTP(w, d.log, errdefs.Unauthenticated("not signed in"))
			return
		}
		errdefs.WriteJSON(w, http.StatusOK, sessionJSON{CSRFToken: se.csrf, ExpiresAt: se.expires.UTC()})
	case http.MethodDelete:
		id, se, ok := d.sessions.get(r)
		if ok && !csrfOK(r, se) {
			errdefs.WriteHTTP(w, d.log, errdefs.Denied("missing or wrong %s header", csrfHeader))
			return
		}
		if ok {
			d.sessions.delete(id)
		}
		setCookie(w, r, "", -1)
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		errdefs.WriteStatus(w, http.StatusMethodNotAllowed, "use POST to sign in, GET to check, DELETE to sign out")
	}
}

// check asks the API whether key is valid (listing one sandbox is the
// cheapest call every team key may make). The admin key, which lists no
// team's sandboxes, is valid when it may list the nodes: its dashboard is
// the nodes page.
func (d *Dashboard) check(r *http.Request, key string) int {
	status := d.status(r, key, "/v2/sandboxes?limit=1")
	if status == http.StatusForbidden {
		if admin := d.status(r, key, "/nodes"); admin == http.StatusOK {
			return admin
		}
	}
	return status
}

// status is the API's answer to GET path with key.
func (d *Dashboard) status(r *http.Request, key, path string) int {
	req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, path, nil)
	req.Host, req.RemoteAddr = r.Host, r.RemoteAddr
	req.Header.Set("X-API-Key", key)
	rec := &statusRecorder{header: http.Header{}}
	d.backend.ServeHTTP(rec, req)
	if rec.status == 0 {
		return http.StatusOK
	}
	return rec.status
}

// authed returns the session of a data call (and its ID), or writes the
// refusal.
func (d *Dashboard) authed(w http.ResponseWriter, r *http.Request) (string, *session, bool) {
	id, se, ok := d.sessions.get(r)
	if !ok {
		errdefs.WriteHTTP(w, d.log, errdefs.Unauthenticated("not signed in (or the session expired): sign in again"))
		return "", nil, false
	}
	if !csrfOK(r, se) {
		errdefs.WriteHTTP(w, d.log, errdefs.Denied("missing or wrong %s header", csrfHeader))
		return "", nil, false
	}
	return id, se, true
}

// serve hands in to the API; a 401 means the session's key was revoked
// (or its team deleted), which ends the session at once.
func (d *Dashboard) serve(w http.ResponseWriter, in *http.Request, sessionID string) {
	sw := &statusWriter{ResponseWriter: w}
	d.backend.ServeHTTP(sw, in)
	if sw.status == http.StatusUnauthorized {
		d.sessions.delete(sessionID)
	}
}

// statusWriter notes the status of a forwarded answer. Flush and Unwrap
// keep streams (events, PTY output) flowing through it.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

func (s *statusWriter) Flush() { _ = http.NewResponseController(s.ResponseWriter).Flush() }

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// passHeaders are the request headers a data call may carry to the API;
// everything else (cookies, routing headers such as E2b-Sandbox-Id,
// tokens) is dropped.
var passHeaders = []string{"Content-Type", "Accept", "Last-Event-Id", "Connect-Protocol-Version", "Connect-Timeout-Ms"}

// inner builds the request the API sees for a dashboard call.
func inner(r *http.Request, path string) *http.Request {
	in := r.Clone(r.Context())
	in.URL.Path, in.URL.RawPath = path, ""
	in.RequestURI = ""
	in.Header = http.Header{}
	for _, h := range passHeaders {
		if v := r.Header.Values(h); len(v) > 0 {
			in.Header[h] = v
		}
	}
	return in
}

// forwardAPI serves /dashboard/api/<path> as the API's /<path> with the
// session's key.
func (d *Dashboard) forwardAPI(w http.ResponseWriter, r *http.Request) {
	sid, se, ok := d.authed(w, r)
	if !ok {
		return
	}
	in := inner(r, "/"+strings.TrimPrefix(r.URL.Path, "/dashboard/api/"))
	in.Header.Set("X-API-Key", se.key)
	d.serve(w, in, sid)
}

// forwardEnvd serves /dashboard/envd/<id>/<path> as <path> on sandbox
// <id>'s agent: the session's key must see the sandbox (GET
// /sandboxes/<id> through the API), whose access token is then added here.
func (d *Dashboard) forwardEnvd(w http.ResponseWriter, r *http.Request) {
	sid, se, ok := d.authed(w, r)
	if !ok {
		return
	}
	id, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/dashboard/envd/"), "/")
	if id == "" || rest == "" {
		errdefs.WriteHTTP(w, d.log, errdefs.Invalid("want /dashboard/envd/<sandboxID>/<path>"))
		return
	}
	get, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, "/sandboxes/"+id, nil)
	get.Host, get.RemoteAddr = r.Host, r.RemoteAddr
	get.Header.Set("X-API-Key", se.key)
	rec := &statusRecorder{header: http.Header{}, keep: true}
	d.backend.ServeHTTP(rec, get)
	if rec.status != 0 && rec.status != http.StatusOK {
		if rec.status == http.StatusUnauthorized {
			d.sessions.delete(sid)
		}
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.status)
		_, _ = w.Write(rec.body)
		return
	}
	var sb struct {
		State           string `json:"state"`
		EnvdAccessToken string `json:"envdAccessToken"`
	}
	if err := json.Unmarshal(rec.body, &sb); err != nil {
		errdefs.WriteStatus(w, http.StatusBadGateway, "unexpected answer from the API")
		return
	}
	in := inner(r, "/"+rest)
	in.Header.Set("E2b-Sandbox-Id", id)
	in.Header.Set("E2b-Sandbox-Port", "49983")
	if sb.EnvdAccessToken != "" {
		in.Header.Set("X-Access-Token", sb.EnvdAccessToken)
	}
	// Not d.serve: a 401 here comes from the sandbox's agent, which code
	// in the sandbox can answer for; it must not sign the user out.
	d.backend.ServeHTTP(w, in)
}

// statusRecorder captures an in-process API answer (small JSON bodies).
type statusRecorder struct {
	header http.Header
	status int
	keep   bool
	body   []byte
}

func (s *statusRecorder) Header() http.Header { return s.header }
func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	if s.keep && len(s.body) < 1<<20 {
		s.body = append(s.body, p...)
	}
	return len(p), nil
}
