package api

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"

	"github.com/sbxdev/sbx/internal/cluster"
	"github.com/sbxdev/sbx/internal/proxy"
)

// toBackend sends what a node's proxy forwards to a sandbox to an HTTP
// server standing in for the sandbox's web server.
type toBackend struct{ u *url.URL }

func (b toBackend) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host = b.u.Scheme, b.u.Host
	return http.DefaultTransport.RoundTrip(r)
}

type oneSandbox struct {
	id string
	tr http.RoundTripper
}

func (o oneSandbox) Route(id string) (http.RoundTripper, bool) { return o.tr, id == o.id }

// startNode starts a node's API server (sbx serve --role node) on real
// HTTP whose proxy reaches sandbox id at backend.
func startNode(t *testing.T, secret cluster.Secret, id string, backend *httptest.Server) *httptest.Server {
	t.Helper()
	u, _ := url.Parse(backend.URL)
	log := slog.New(slog.DiscardHandler)
	s := New(log, nil, nil, nil, proxy.New(oneSandbox{id: id, tr: toBackend{u}}, "sbx.test", log))
	s.SetClusterVerifier(cluster.NewVerifier(secret))
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv
}

// TestNodeKeepsClusterSignatureFromSandbox: sandbox traffic reaches a
// node signed by an api replica. The tenant's code in the sandbox (a web
// server on a port of its own) must not receive that signature: each
// node remembers only its own nonces and the routing headers are not
// signed, so the sandbox could replay it within the skew window to
// another node and be served there as an api replica.
func TestNodeKeepsClusterSignatureFromSandbox(t *testing.T) {
	secret, err := cluster.NewSecret("test-cluster-secret-0123456789abcdef0123456789")
	if err != nil {
		t.Fatal(err)
	}
	leaked := make(chan string, 4)
	sandbox := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked <- r.Header.Get(cluster.Header)
		io.WriteString(w, "from the sandbox")
	}))
	t.Cleanup(sandbox.Close)
	const id = "abc123"
	nodeA := startNode(t, secret, id, sandbox)
	nodeB := startNode(t, secret, id, sandbox)

	// What an api replica's router sends for host-routed traffic to port
	// 8001 of the sandbox (cluster.forwarder).
	send := func(node *httptest.Server, sig string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, node.URL+"/page", nil)
		req.Host = "8001-" + id + ".sbx.test"
		req.Header.Set("E2b-Sandbox-Id", id)
		req.Header.Set("E2b-Sandbox-Port", strconv.Itoa(8001))
		if sig == "" {
			if err := cluster.NewSigner(secret).Sign(req, ""); err != nil {
				t.Fatal(err)
			}
		} else {
			req.Header.Set(cluster.Header, sig)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if resp := send(nodeA, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("signed sandbox traffic through node A = %d; want 200", resp.StatusCode)
	}
	sig := <-leaked
	if sig == "" {
		return
	}
	resp := send(nodeB, sig)
	t.Fatalf("the sandbox received the api replica's signature %q; replayed to node B it was answered %d (401: refused)",
		sig, resp.StatusCode)
}
