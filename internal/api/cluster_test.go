package api

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
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

// startNode starts a node's API server (sbx serve --role node) named name
// on real HTTP whose proxy reaches sandbox id at backend.
func startNode(t *testing.T, secret cluster.Secret, name, id string, backend *httptest.Server) *httptest.Server {
	t.Helper()
	u, _ := url.Parse(backend.URL)
	log := slog.New(slog.DiscardHandler)
	s := New(log, nil, nil, nil, proxy.New(oneSandbox{id: id, tr: toBackend{u}}, "sbx.test", log))
	s.SetClusterVerifier(cluster.NewVerifier(secret, name))
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv
}

// TestNodeKeepsClusterSignatureFromSandbox: sandbox traffic reaches a
// node signed by an api replica. The tenant's code in the sandbox (a web
// server on a port of its own) must not receive that signature; and were
// one to leak, it must be worthless elsewhere: each node remembers only
// its own nonces, so the signature names the node (and the sandbox and
// port) it was made for, and another node refuses it (401) even though
// its nonce is new there.
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
	nodeA := startNode(t, secret, "node-a", id, sandbox)
	nodeB := startNode(t, secret, "node-b", id, sandbox)

	// What an api replica's router sends for host-routed traffic to port
	// 8001 of the sandbox (cluster.forwarder).
	// signed is the api replica's signature, as sent; sig, when not "",
	// is sent instead of a fresh one.
	var signed string
	send := func(node *httptest.Server, sig, sandboxID string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, node.URL+"/page", nil)
		req.Host = "8001-" + id + ".sbx.test"
		req.Header.Set("E2b-Sandbox-Id", id)
		req.Header.Set("E2b-Sandbox-Port", strconv.Itoa(8001))
		if sig == "" {
			if err := cluster.NewSigner(secret).Sign(req, "node-a", ""); err != nil {
				t.Fatal(err)
			}
			signed = req.Header.Get(cluster.Header)
		} else {
			req.Header.Set(cluster.Header, sig)
		}
		req.Header.Set("E2b-Sandbox-Id", sandboxID)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	if status, body := send(nodeA, "", id); status != http.StatusOK {
		t.Fatalf("signed sandbox traffic through node A = %d %s; want 200", status, body)
	}
	if sig := <-leaked; sig != "" {
		status, body := send(nodeB, sig, id)
		t.Fatalf("the sandbox received the api replica's signature %q; replayed to node B it was answered %d %s (401: refused)",
			sig, status, body)
	}

	// Had it leaked: node B refuses it by its signature, not by its nonce
	// (which B has never seen).
	if status, body := send(nodeB, signed, id); status != http.StatusUnauthorized || !strings.Contains(body, "another node") {
		t.Fatalf("node A's signature replayed to node B = %d %s; want 401, signed for another node", status, body)
	}
	// A fresh signature for sandbox id at node A, moved to another sandbox.
	if status, body := send(nodeA, "", "other1"); status != http.StatusUnauthorized || !strings.Contains(body, "does not match") {
		t.Fatalf("a signature moved to another sandbox = %d %s; want 401", status, body)
	}
}
