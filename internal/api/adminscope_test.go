package api

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/cluster"
	"github.com/sbxdev/sbx/internal/proxy"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
)

// nodeManager is a node's manager as the admin routes use it.
type nodeManager struct {
	fakeSandboxes
	killedWhy map[string]string
}

func (n *nodeManager) NodeID() string { return "node-1" }
func (n *nodeManager) Live() []store.Sandbox {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]store.Sandbox(nil), n.live...)
}
func (n *nodeManager) SetDraining(bool) {}
func (n *nodeManager) Draining() bool   { return false }
func (n *nodeManager) KillWithReason(_ context.Context, id, reason string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.killedWhy[id] = reason
	return nil
}

// TestAdminSignatureScope: a node serves a request signed for the cluster
// admin (cluster.AdminTeam) on the routes an api replica needs for the
// admin only: the kill of one team's sandboxes on that node (which kills
// that team's and no other's, recorded with reason admin) and /nodes/{id};
// every other route, the admin's build cancel and team management
// included, is refused with 403.
func TestAdminSignatureScope(t *testing.T) {
	secret, err := cluster.NewSecret("test-cluster-secret-0123456789abcdef0123456789")
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlstore.Open(t.Context(), filepath.Join(t.TempDir(), "sbx.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a, err := st.CreateTeam(t.Context(), "alpha", auth.NewAPIKey())
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.CreateTeam(t.Context(), "beta", auth.NewAPIKey())
	if err != nil {
		t.Fatal(err)
	}
	mgr := &nodeManager{killedWhy: map[string]string{}}
	mgr.live = []store.Sandbox{{ID: "a1", TeamID: a.ID}, {ID: "a2", TeamID: a.ID}, {ID: "b1", TeamID: b.ID}}
	log := slog.New(slog.DiscardHandler)
	s := New(log, mgr, nil, st, proxy.New(oneSandbox{}, "sbx.test", log))
	s.SetClusterVerifier(cluster.NewVerifier(secret, "node-1"))
	node := httptest.NewServer(s)
	t.Cleanup(node.Close)
	signer := cluster.NewSigner(secret)
	var mu sync.Mutex
	send := func(method, path string) (int, string) {
		mu.Lock()
		defer mu.Unlock()
		req, _ := http.NewRequestWithContext(t.Context(), method, node.URL+path, nil)
		if err := signer.Sign(req, "node-1", cluster.AdminTeam); err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, tc := range []struct{ method, path string }{
		{http.MethodPost, "/admin/teams/" + a.ID + "/builds/cancel"},
		{http.MethodDelete, "/sandboxes/a1"},
		{http.MethodGet, "/v2/sandboxes"},
		{http.MethodGet, "/nodes"},
		{http.MethodPost, "/teams"},
		{http.MethodDelete, "/teams/" + a.ID},
		{http.MethodGet, "/teams"},
	} {
		if code, body := send(tc.method, tc.path); code != http.StatusForbidden {
			t.Errorf("%s %s signed for the cluster admin = %d %s; want 403", tc.method, tc.path, code, body)
		}
	}
	if len(mgr.killedWhy) != 0 {
		t.Fatalf("refused requests killed %v", mgr.killedWhy)
	}
	code, body := send(http.MethodPost, cluster.KillTeamPath(a.ID))
	var ans struct{ KilledCount, FailedCount int }
	if code != http.StatusOK || json.Unmarshal([]byte(body), &ans) != nil || ans.KilledCount != 2 {
		t.Fatalf("the admin's kill of team alpha at the node = %d %s; want 200, 2 killed", code, body)
	}
	if mgr.killedWhy["a1"] != cluster.KillReason || mgr.killedWhy["a2"] != cluster.KillReason || mgr.killedWhy["b1"] != "" {
		t.Errorf("killed %v; want a1 and a2 with reason %q, not b1", mgr.killedWhy, cluster.KillReason)
	}
	if code, body := send(http.MethodPost, cluster.KillTeamPath("no-such-team")); code != http.StatusNotFound {
		t.Errorf("kill of a team that does not exist = %d %s; want 404", code, body)
	}
	if code, body := send(http.MethodGet, "/nodes/node-1"); code != http.StatusOK {
		t.Errorf("GET /nodes/node-1 signed for the cluster admin = %d %s; want 200", code, body)
	}
}
