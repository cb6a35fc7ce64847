package e2e

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/cluster"
	"github.com/sbxdev/sbx/sdk"
)

// headerEcho is a web server a tenant runs in its sandbox: it answers
// every request with the request's headers.
const headerEcho = `import http.server as h
class H(h.BaseHTTPRequestHandler):
    def do_GET(self):
        b = str(self.headers).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
h.HTTPServer(("0.0.0.0", 8001), H).serve_forever()
`

// TestClusterSandboxSeesNoClusterSignature: traffic an api replica
// forwards to a node is signed with the cluster secret; the node must not
// hand that signature on to the sandbox. And were one to leak, it must be
// worthless: each node remembers only its own nonces, so a signature
// names the node, sandbox and port it was made for, and any other node
// (or another sandbox) refuses it by its signature check (401).
func TestClusterSandboxSeesNoClusterSignature(t *testing.T) {
	c := startCluster(t)
	s, err := c.api.Client(t).Create(opCtx(t), sdk.CreateOptions{Timeout: 10 * time.Minute})
	if err != nil {
		t.Fatalf("create through the api replica: %v\napi log:\n%s", err, c.api.Log())
	}
	createdIDs.Store(s.ID, true)
	t.Cleanup(func() { // t.Context is over by now
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.Kill(ctx); err != nil && !sdk.IsNotFound(err) {
			t.Errorf("cleanup: kill %s: %v", s.ID, err)
		}
	})
	if _, err := s.Files.Write(opCtx(t), "/tmp/echo.py", []byte(headerEcho)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commands.Start(opCtx(t), "exec python3 /tmp/echo.py", sdk.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	var seen string
	waitFor(t, "the sandbox's header echo on port 8001", func() bool {
		req, _ := http.NewRequestWithContext(opCtx(t), http.MethodGet, c.api.URL+"/echo", nil)
		req.Host = "8001-" + s.ID + "." + clusterDomain
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		seen = string(b)
		return resp.StatusCode == http.StatusOK && strings.Contains(strings.ToLower(seen), "e2b-sandbox-id")
	})
	var sig string
	for _, line := range strings.Split(seen, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), cluster.Header) {
			sig = strings.TrimSpace(v)
		}
	}
	i := c.nodeOf(t, s.ID)
	owner, other := c.nodes[i], c.nodes[(i+1)%len(c.nodes)]
	if sig != "" {
		// Show what the sandbox can do with it.
		r := other.Raw(t, http.MethodGet, "/echo", "", map[string]string{cluster.Header: sig,
			"E2b-Sandbox-Id": s.ID, "E2b-Sandbox-Port": "8001"})
		t.Fatalf("the sandbox received the api replica's cluster signature (%s: %s); replayed to another node it got %d %s "+
			"(401 would mean refused)", cluster.Header, sig, r.Status, strings.TrimSpace(r.Body))
	}

	// Had one leaked: sign as the api replica does for the sandbox's
	// node, use it there, then replay it to the other node, whose nonces
	// never saw it.
	secret, err := cluster.NewSecret(c.secret)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, owner.URL+"/echo", nil)
	req.Header.Set("E2b-Sandbox-Id", s.ID)
	req.Header.Set("E2b-Sandbox-Port", "8001")
	if err := cluster.NewSigner(secret).Sign(req, nodeName(i), ""); err != nil {
		t.Fatal(err)
	}
	headers := map[string]string{cluster.Header: req.Header.Get(cluster.Header), "E2b-Sandbox-Id": s.ID, "E2b-Sandbox-Port": "8001"}
	if r := owner.Raw(t, http.MethodGet, "/echo", "", headers); r.Status != http.StatusOK {
		t.Fatalf("signed sandbox traffic at the sandbox's node = %d %s; want 200", r.Status, r.Body)
	}
	if r := other.Raw(t, http.MethodGet, "/echo", "", headers); r.Status != http.StatusUnauthorized ||
		!strings.Contains(r.Body, "signed for another node") {
		t.Fatalf("a signature for the sandbox's node replayed to another node = %d %s; want 401, signed for another node",
			r.Status, strings.TrimSpace(r.Body))
	}
}
