package security

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/sdk"
)

// dashClient is a browser-like client of the dashboard: a cookie jar and
// the CSRF token the page keeps in memory.
type dashClient struct {
	http *http.Client
	base string
	csrf string
}

func (c *dashClient) do(t *testing.T, method, path, body string, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(opCtx(t), method, c.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestDashboardSession attacks the dashboard's sign-in: the session cookie
// stands for one team's key and no more, state-changing calls need the
// CSRF token and the page's own origin, and a sandbox's HTML file served
// on the dashboard's origin cannot act as that origin.
func TestDashboardSession(t *testing.T) {
	s := startServer(t)
	keyB := s.CreateTeam(t, "dash-b-"+randHex(t, 3))
	mine := create(t, s.Client(t), sdk.CreateOptions{Template: "base"})
	theirs := create(t, s.ClientWithKey(t, keyB), sdk.CreateOptions{Template: "base"})

	jar, _ := cookiejar.New(nil)
	c := &dashClient{http: &http.Client{Jar: jar}, base: s.URL}
	st, body, hdr := c.do(t, "POST", "/dashboard/session", `{"apiKey":"`+s.APIKey+`"}`, nil)
	var sess struct {
		CSRFToken string `json:"csrfToken"`
	}
	if st != http.StatusOK || json.Unmarshal([]byte(body), &sess) != nil || sess.CSRFToken == "" {
		t.Fatalf("sign in: %d %s", st, body)
	}
	c.csrf = sess.CSRFToken
	if ck := hdr.Get("Set-Cookie"); !strings.Contains(ck, "HttpOnly") || !strings.Contains(ck, "SameSite=Strict") || strings.Contains(ck, s.APIKey) {
		t.Fatalf("session cookie %q: want HttpOnly, SameSite=Strict and no key in it", ck)
	}

	t.Run("another team's sandbox", func(t *testing.T) {
		if st, body, _ := c.do(t, "GET", "/dashboard/api/sandboxes/"+theirs.ID, "", nil); st != http.StatusNotFound {
			t.Errorf("team A's session reading team B's sandbox: %d %s, want 404", st, body)
		}
		st, body, _ := c.do(t, "POST", "/dashboard/envd/"+theirs.ID+"/filesystem.Filesystem/ListDir", `{"path":"/"}`,
			map[string]string{"X-CSRF-Token": c.csrf, "Connect-Protocol-Version": "1"})
		if st != http.StatusNotFound || strings.Contains(body, "entries") {
			t.Errorf("team A's session listing team B's sandbox's files: %d %s, want 404", st, body)
		}
		// Routing headers of its own do not get a session's call to another
		// sandbox either: they are dropped before the API sees the call.
		st, body, _ = c.do(t, "POST", "/dashboard/api/filesystem.Filesystem/ListDir", `{"path":"/"}`,
			map[string]string{"X-CSRF-Token": c.csrf, "E2b-Sandbox-Id": theirs.ID, "E2b-Sandbox-Port": "49983"})
		if strings.Contains(body, "entries") {
			t.Errorf("routing headers through /dashboard/api reached team B's agent: %d %s", st, body)
		}
	})

	t.Run("cross-site requests", func(t *testing.T) {
		for name, h := range map[string]map[string]string{
			"no CSRF token":    nil,
			"wrong CSRF token": {"X-CSRF-Token": "x" + c.csrf},
			"other origin":     {"X-CSRF-Token": c.csrf, "Origin": "https://evil.example"},
		} {
			if st, body, _ := c.do(t, "DELETE", "/dashboard/api/sandboxes/"+mine.ID, "", h); st != http.StatusForbidden {
				t.Errorf("%s: kill through the session answered %d %s, want 403", name, st, body)
			}
		}
		if info, err := s.Client(t).Get(opCtx(t), mine.ID); err != nil || info.State != "running" {
			t.Fatalf("a refused kill killed the sandbox: %+v %v", info, err)
		}
		if st, _, _ := c.do(t, "POST", "/dashboard/session", `{"apiKey":"`+s.APIKey+`"}`, map[string]string{"Origin": "https://evil.example"}); st != http.StatusForbidden {
			t.Errorf("sign-in posted from another origin: %d, want 403", st)
		}
	})

	t.Run("sandbox HTML on the dashboard origin", func(t *testing.T) {
		mustSh(t, mine, "", `echo '<script>fetch("/dashboard/session")</script>' > /tmp/x.html`)
		info := s.Raw(t, "GET", "/sandboxes/"+mine.ID, "", keyHeader(s.APIKey))
		var sb struct {
			EnvdAccessToken string `json:"envdAccessToken"`
		}
		_ = json.Unmarshal([]byte(info.Body), &sb)
		if sb.EnvdAccessToken == "" {
			t.Fatalf("sandbox %s has no access token (secure sandboxes are the default): %s", mine.ID, info.Body)
		}
		sum := sha256.Sum256([]byte("/tmp/x.html:read:user:" + sb.EnvdAccessToken))
		q := url.Values{"path": {"/tmp/x.html"}, "username": {"user"}, "signature": {"v1_" + base64.RawStdEncoding.EncodeToString(sum[:])}}
		r := s.Raw(t, "GET", "/files?"+q.Encode(), "", nil)
		if r.Status != http.StatusOK || !strings.Contains(r.Body, "<script>") {
			t.Fatalf("signed download: %d %s", r.Status, r.Body)
		}
		if r.Header.Get("Content-Security-Policy") != "sandbox" || r.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("a sandbox's HTML on the control plane's origin has CSP %q: it would run as the dashboard's origin",
				r.Header.Get("Content-Security-Policy"))
		}
		st, _, h := c.do(t, "GET", "/dashboard/envd/"+mine.ID+"/files?path=/tmp/x.html", "", nil)
		if st != http.StatusOK || h.Get("Content-Security-Policy") != "sandbox" {
			t.Errorf("the dashboard's file download: %d with CSP %q, want 200 sandbox", st, h.Get("Content-Security-Policy"))
		}
	})

	t.Run("a revoked key's session ends", func(t *testing.T) {
		r := s.Raw(t, "POST", "/api-keys", `{"name":"dash-revoke"}`, keyHeader(s.APIKey))
		var k struct{ ID, Key string }
		if r.Status != http.StatusCreated || json.Unmarshal([]byte(r.Body), &k) != nil || k.Key == "" {
			t.Fatalf("create key: %d %s", r.Status, r.Body)
		}
		jar, _ := cookiejar.New(nil)
		rc := &dashClient{http: &http.Client{Jar: jar}, base: s.URL}
		if st, body, _ := rc.do(t, "POST", "/dashboard/session", `{"apiKey":"`+k.Key+`"}`, nil); st != http.StatusOK {
			t.Fatalf("sign in with the new key: %d %s", st, body)
		}
		if st, _, _ := rc.do(t, "GET", "/dashboard/api/v2/sandboxes", "", nil); st != http.StatusOK {
			t.Fatalf("data call before revocation: %d", st)
		}
		if r := s.Raw(t, "DELETE", "/api-keys/"+k.ID, "", keyHeader(s.APIKey)); r.Status >= 300 {
			t.Fatalf("revoke: %d %s", r.Status, r.Body)
		}
		if st, _, _ := rc.do(t, "GET", "/dashboard/api/v2/sandboxes", "", nil); st != http.StatusUnauthorized {
			t.Errorf("data call after the key was revoked: %d, want 401", st)
		}
		if st, _, _ := rc.do(t, "GET", "/dashboard/session", "", nil); st != http.StatusUnauthorized {
			t.Errorf("the revoked key's session lives on: GET /dashboard/session %d, want 401", st)
		}
	})

	t.Run("sign-out ends the session", func(t *testing.T) {
		u, _ := url.Parse(s.URL + "/dashboard/")
		cookies := jar.Cookies(u)
		if st, _, _ := c.do(t, "DELETE", "/dashboard/session", "", map[string]string{"X-CSRF-Token": c.csrf}); st != http.StatusNoContent {
			t.Fatalf("sign out: %d", st)
		}
		replay, _ := cookiejar.New(nil)
		replay.SetCookies(u, cookies)
		old := &dashClient{http: &http.Client{Jar: replay}, base: s.URL}
		if st, _, _ := old.do(t, "GET", "/dashboard/api/v2/sandboxes", "", nil); st != http.StatusUnauthorized {
			t.Errorf("the signed-out cookie, replayed: %d, want 401", st)
		}
	})
}
