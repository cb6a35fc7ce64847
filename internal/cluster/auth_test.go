package cluster

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
)

var (
	testSecret  = mustSecret("0123456789abcdef0123456789abcdef-test")
	otherSecret = mustSecret("fedcba9876543210fedcba9876543210-other")
	t0          = time.Date(2026, 12, 3, 11, 0, 0, 0, time.UTC)
)

func mustSecret(s string) Secret {
	sec, err := NewSecret(s)
	if err != nil {
		panic(err)
	}
	return sec
}

// signed returns a request as node "node-a" receives it, signed for it
// at when.
func signed(t *testing.T, sec Secret, when time.Time, method, uri, team string) *http.Request {
	t.Helper()
	return signedFor(t, sec, "node-a", when, method, uri, team, nil)
}

// signedFor returns a request as a node receives it, signed for node at
// when, with the routing headers h.
func signedFor(t *testing.T, sec Secret, node string, when time.Time, method, uri, team string, h http.Header) *http.Request {
	t.Helper()
	out := httptest.NewRequest(method, "http://node.internal:3000"+uri, nil)
	for k, v := range h {
		out.Header[k] = v
	}
	g := NewSigner(sec)
	g.now = func() time.Time { return when }
	if err := g.Sign(out, node, team); err != nil {
		t.Fatal(err)
	}
	in := httptest.NewRequest(method, uri, nil) // RequestURI as a server sees it
	in.Header = out.Header.Clone()
	return in
}

// sandboxTraffic is what an api replica's router sets to send sandbox
// traffic to port 8001 of sandbox abc123.
func sandboxTraffic() http.Header {
	return http.Header{SandboxIDHeader: {"abc123"}, SandboxPortHeader: {"8001"}}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	replayed := signed(t, testSecret, t0, "DELETE", "/sandboxes/abc", "team1")
	tests := []struct {
		name    string
		req     func() *http.Request
		at      time.Time
		want    string // team
		wantErr string // in the error, "" = accepted
	}{
		{"valid", func() *http.Request { return signed(t, testSecret, t0, "GET", "/sandboxes/abc?x=1", "team1") }, t0, "team1", ""},
		{"valid for sandbox traffic without team", func() *http.Request { return signed(t, testSecret, t0, "POST", "/process.Process/Start", "") }, t0, "", ""},
		{"within the skew", func() *http.Request { return signed(t, testSecret, t0, "GET", "/sandboxes", "team1") }, t0.Add(59 * time.Second), "team1", ""},
		{"no header", func() *http.Request { return httptest.NewRequest("GET", "/sandboxes", nil) }, t0, "", "no cluster signature"},
		{"garbage header", func() *http.Request {
			r := httptest.NewRequest("GET", "/sandboxes", nil)
			r.Header.Set(Header, "Bearer e2b_abc")
			return r
		}, t0, "", "invalid X-Sbx-Cluster-Auth"},
		{"an old signature (replayed later)", func() *http.Request { return signed(t, testSecret, t0, "GET", "/sandboxes", "team1") }, t0.Add(61 * time.Second), "", "away from this node's clock"},
		{"a signature from the future", func() *http.Request {
			return signed(t, testSecret, t0.Add(2*time.Minute), "GET", "/sandboxes", "team1")
		}, t0, "", "away from this node's clock"},
		{"a signature for another team", func() *http.Request {
			r := signed(t, testSecret, t0, "GET", "/sandboxes", "team1")
			r.Header.Set(Header, strings.Replace(r.Header.Get(Header), "team=team1", "team=team2", 1))
			return r
		}, t0, "", "does not match"},
		{"a signature for another path", func() *http.Request {
			r := signed(t, testSecret, t0, "GET", "/sandboxes/a", "team1")
			in := httptest.NewRequest("GET", "/sandboxes/b", nil)
			in.Header = r.Header
			return in
		}, t0, "", "does not match"},
		{"a signature for another method", func() *http.Request {
			r := signed(t, testSecret, t0, "GET", "/sandboxes/a", "team1")
			in := httptest.NewRequest("DELETE", "/sandboxes/a", nil)
			in.Header = r.Header
			return in
		}, t0, "", "does not match"},
		{"another cluster's secret", func() *http.Request { return signed(t, otherSecret, t0, "GET", "/sandboxes", "team1") }, t0, "", "does not match"},
		{"a signature for another node", func() *http.Request {
			return signedFor(t, testSecret, "node-b", t0, "GET", "/sandboxes", "team1", nil)
		}, t0, "", `another node (this is node "node-a")`},
		{"a node name that is a prefix of this one's", func() *http.Request {
			return signedFor(t, testSecret, "node-", t0, "GET", "/sandboxes", "team1", nil)
		}, t0, "", "does not match"},
		{"valid sandbox traffic", func() *http.Request {
			return signedFor(t, testSecret, "node-a", t0, "GET", "/page", "", sandboxTraffic())
		}, t0, "", ""},
		{"sandbox traffic for another node", func() *http.Request {
			return signedFor(t, testSecret, "node-b", t0, "GET", "/page", "", sandboxTraffic())
		}, t0, "", "does not match"},
		{"sandbox traffic moved to another sandbox", func() *http.Request {
			r := signedFor(t, testSecret, "node-a", t0, "GET", "/page", "", sandboxTraffic())
			r.Header.Set(SandboxIDHeader, "def456")
			return r
		}, t0, "", "does not match"},
		{"sandbox traffic moved to another port", func() *http.Request {
			r := signedFor(t, testSecret, "node-a", t0, "GET", "/page", "", sandboxTraffic())
			r.Header.Set(SandboxPortHeader, "49983")
			return r
		}, t0, "", "does not match"},
		{"routing headers added to an API request's signature", func() *http.Request {
			r := signed(t, testSecret, t0, "GET", "/page", "")
			r.Header.Set(SandboxIDHeader, "abc123")
			r.Header.Set(SandboxPortHeader, "8001")
			return r
		}, t0, "", "does not match"},
		{"routing headers removed (host routing instead)", func() *http.Request {
			r := signedFor(t, testSecret, "node-a", t0, "GET", "/page", "", sandboxTraffic())
			r.Header.Del(SandboxIDHeader)
			r.Header.Del(SandboxPortHeader)
			return r
		}, t0, "", "does not match"},
		{"the old v1 format", func() *http.Request {
			r := signed(t, testSecret, t0, "GET", "/sandboxes", "team1")
			r.Header.Set(Header, "v1"+strings.TrimPrefix(r.Header.Get(Header), Version))
			return r
		}, t0, "", "takes only v2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := NewVerifier(testSecret, "node-a")
			v.now = func() time.Time { return tt.at }
			team, err := v.Verify(tt.req())
			if tt.wantErr == "" {
				if err != nil || team != tt.want {
					t.Fatalf("Verify = %q, %v; want %q", team, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Verify = %q, %v; want an error containing %q", team, err, tt.wantErr)
			}
			if !errors.Is(err, ErrNoSignature) && !errors.Is(err, errdefs.ErrUnauthenticated) {
				t.Errorf("error %v is not ErrUnauthenticated", err)
			}
		})
	}
	t.Run("a fresh replay of the same signature", func(t *testing.T) {
		v := NewVerifier(testSecret, "node-a")
		v.now = func() time.Time { return t0.Add(time.Second) }
		if _, err := v.Verify(replayed); err != nil {
			t.Fatalf("first use: %v", err)
		}
		if _, err := v.Verify(replayed); err == nil || !strings.Contains(err.Error(), "already used") {
			t.Fatalf("second use = %v; want refused as a replay", err)
		}
	})
	t.Run("a replay at another node, used or not at its own", func(t *testing.T) {
		a, b := NewVerifier(testSecret, "node-a"), NewVerifier(testSecret, "node-b")
		a.now = func() time.Time { return t0 }
		b.now = a.now
		for _, h := range []http.Header{nil, sandboxTraffic()} {
			r := signedFor(t, testSecret, "node-a", t0, "GET", "/page", "", h)
			if _, err := b.Verify(r); err == nil || !strings.Contains(err.Error(), "does not match") {
				t.Fatalf("node B before node A = %v; want refused as signed for another node", err)
			}
			if _, err := a.Verify(r); err != nil {
				t.Fatalf("node A: %v", err)
			}
			if _, err := b.Verify(r); err == nil || !strings.Contains(err.Error(), "does not match") {
				t.Fatalf("node B after node A = %v; want refused as signed for another node", err)
			}
			if _, err := a.Verify(r); err == nil || !strings.Contains(err.Error(), "already used") {
				t.Fatalf("node A again = %v; want refused as a replay", err)
			}
		}
	})
	t.Run("nonces are forgotten after the window", func(t *testing.T) {
		v := NewVerifier(testSecret, "node-a")
		now := t0
		v.now = func() time.Time { return now }
		for i := range 100 {
			if _, err := v.Verify(signed(t, testSecret, now, "GET", "/sandboxes", "t")); err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
		}
		now = now.Add(3 * MaxSkew)
		if _, err := v.Verify(signed(t, testSecret, now, "GET", "/sandboxes", "t")); err != nil {
			t.Fatal(err)
		}
		if len(v.seen) != 1 {
			t.Errorf("%d nonces remembered after the window, want 1", len(v.seen))
		}
	})
}

func TestSecret(t *testing.T) {
	t.Parallel()
	if _, err := NewSecret("short"); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Errorf("a short secret: %v", err)
	}
	s := mustSecret(strings.Repeat("x", 40) + "\n")
	if len(s.b) != 40 {
		t.Errorf("the file's newline is part of the secret")
	}
	if s.String() != "[redacted]" || s.LogValue().String() != "[redacted]" {
		t.Errorf("the secret prints itself")
	}
	if err := NewSigner(s).Sign(httptest.NewRequest("GET", "/", nil), "node-a", "a;team=b"); err == nil {
		t.Errorf("a team ID with separators was signed")
	}
	if err := NewSigner(s).Sign(httptest.NewRequest("GET", "/", nil), "", "team1"); err == nil {
		t.Errorf("a signature for no node was made")
	}
}
