package dashboard

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"
)

// A session stands for one sign-in: the browser holds only a random ID in
// an HttpOnly cookie; the API key it was issued for stays in this process.
// Sessions live in memory, so a server restart signs everyone out, which
// is the safe direction to fail.
type session struct {
	key     string // the team API key the session was issued for
	csrf    string // must come back as X-CSRF-Token on state-changing calls
	expires time.Time
}

const (
	cookieName = "sbx_dashboard"
	csrfHeader = "X-CSRF-Token"
	// maxSessions bounds the memory sessions can take; only holders of a
	// valid key create them, so this is a backstop, not a rate limit.
	maxSessions = 10000
)

// sessions is the in-memory session table.
type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	ttl time.Duration
	now func() time.Time
}

func newSessions(ttl time.Duration, now func() time.Time) *sessions {
	return &sessions{m: map[string]*session{}, ttl: ttl, now: now}
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create issues a session for key and returns its ID.
func (s *sessions) create(key string) (string, *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for id, se := range s.m {
		if !now.Before(se.expires) {
			delete(s.m, id)
		}
	}
	if len(s.m) >= maxSessions {
		// Drop the session closest to expiry rather than refuse a
		// valid key.
		var oldest string
		for id, se := range s.m {
			if oldest == "" || se.expires.Before(s.m[oldest].expires) {
				oldest = id
			}
		}
		delete(s.m, oldest)
	}
	id := randomToken()
	se := &session{key: key, csrf: randomToken(), expires: now.Add(s.ttl)}
	s.m[id] = se
	return id, se
}

// get returns the live session of r's cookie.
func (s *sessions) get(r *http.Request) (string, *session, bool) {
	c, err := r.Cookie(cookieName)
	if err != nil || c.Value == "" {
		return "", nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	se, ok := s.m[c.Value]
	if !ok {
		return "", nil, false
	}
	if !s.now().Before(se.expires) {
		delete(s.m, c.Value)
		return "", nil, false
	}
	cp := *se
	return c.Value, &cp, true
}

func (s *sessions) delete(id string) {
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
}

// setCookie sends the session cookie: HttpOnly (no script reads it),
// SameSite=Strict (no other site's page sends it), Secure when the
// request came over TLS, scoped to /dashboard.
func setCookie(w http.ResponseWriter, r *http.Request, id string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: "/dashboard", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
}

// csrfOK checks a state-changing request: SameSite=Strict already keeps
// other sites' requests from carrying the cookie; the token header (which
// a cross-origin page can neither read nor send without a CORS preflight
// we never grant) and the Origin check hold even in browsers that ignore
// SameSite.
func csrfOK(r *http.Request, se *session) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host && o != "https://"+r.Host {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(r.Header.Get(csrfHeader)), []byte(se.csrf)) == 1
}
