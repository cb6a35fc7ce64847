package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sbxdev/sbx/internal/datadir"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqldb/sqldbtest"
	"github.com/sbxdev/sbx/internal/testenv"
	"github.com/sbxdev/sbx/sdk"
	"github.com/sbxdev/sbx/tests/harness"
)

// TestDashboardClusterNodes: the dashboard of an api replica (sbx serve
// --role api) in headless Chromium, signed in with the admin key: the
// nodes page shows the node with the sandbox created through the
// replica, and its Drain button drains the node (the node's heartbeat
// records it).
func TestDashboardClusterNodes(t *testing.T) {
	b := newBrowser(t)
	testenv.Require(t, testenv.Postgres)
	dsn := sqldbtest.DSN(t, sqldb.Postgres)
	secret := filepath.Join(t.TempDir(), "cluster-secret")
	if err := os.WriteFile(secret, []byte("dashboard-cluster-secret-0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	common := []string{"--database", dsn, "--cluster-secret-file", secret, "--node-grace", "10m",
		"--blob-store", "file://" + filepath.Join(t.TempDir(), "blobs")}
	api := harness.StartServer(t, append([]string{"--role", "api", "--node-name", "api-1"}, common...)...)
	copyKeys := func(dir string) {
		for _, f := range []string{datadir.Layout{Root: api.DataDir}.APIKey(), datadir.Layout{Root: api.DataDir}.AdminKey()} {
			v, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), v, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	harness.StartNodeServer(t, copyKeys, append([]string{"--role", "node", "--node-name", "node-1",
		"--snapshot-runtime", "none", "--pool", "base=0,code-interpreter=0,*=0"}, common...)...)
	adminKey := api.AdminKey(t)
	admin := map[string]string{"X-API-Key": adminKey}
	status := func() string {
		var n struct{ Status string }
		r := api.Raw(t, http.MethodGet, "/nodes/node-1", "", admin)
		_ = json.Unmarshal([]byte(r.Body), &n)
		return n.Status
	}
	for deadline := time.Now().Add(60 * time.Second); status() != "ready"; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("node-1 is not ready on the api replica after 60 s: %q", status())
		}
	}
	c := api.Client(t)
	sb, err := c.Create(t.Context(), sdk.CreateOptions{Template: "base", Timeout: 5 * time.Minute})
	if err != nil {
		t.Fatalf("create through the api replica: %v\n%s", err, api.Log())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.Kill(ctx, sb.ID)
	})

	node := `#nodes tr[data-id="node-1"]`
	b.do(t, "sign in with the admin key",
		chromedp.Navigate(api.URL+"/dashboard"),
		chromedp.WaitVisible(chromedp.CSS("#key")),
		chromedp.SendKeys(chromedp.CSS("#key"), adminKey),
		chromedp.Click(chromedp.CSS("#connect")),
		chromedp.WaitVisible(chromedp.CSS("#view-nodes")),
		chromedp.WaitVisible(chromedp.CSS(node)),
		until(fmt.Sprintf(`document.querySelector('%s td:nth-child(2)').textContent === "ready"`, node)),
		until(fmt.Sprintf(`document.querySelector('%s td:nth-child(3)').textContent === "1"`, node)),
		chromedp.Click(chromedp.CSS(node+" a.node")),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#node-sandboxes tr[data-id="%s"]`, sb.ID))))
	b.shot(t, "cluster-nodes")
	b.do(t, "drain node-1",
		chromedp.Click(chromedp.CSS(node+" button.node-status")),
		until(fmt.Sprintf(`document.querySelector('%s td:nth-child(2)').textContent === "draining"`, node)))
	if got := status(); got != "draining" {
		t.Errorf("node-1 after the Drain button: %q", got)
	}
	b.shot(t, "cluster-nodes-drained")
}
