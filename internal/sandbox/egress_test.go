package sandbox

import (
	"context"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/datadir"
	"github.com/sbxdev/sbx/internal/network"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
	"github.com/sbxdev/sbx/internal/template"
)

// policyNetwork records, for each policy set, whether the sandbox's
// container had been started already.
type policyNetwork struct {
	nopNetwork
	drv *exitDriver

	mu       sync.Mutex
	policies map[string]network.Policy
	late     []string // sandboxes that ran before their policy was set
}

func (n *policyNetwork) SetPolicy(_ context.Context, id string, p network.Policy) error {
	n.drv.mu.Lock()
	_, started := n.drv.state[id]
	n.drv.mu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if started {
		n.late = append(n.late, id)
	}
	n.policies[id] = p
	return nil
}

func (n *policyNetwork) PolicyOf(id string) network.Policy {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.policies[id]
}

// A create with an egress policy, with a warm pool of the template ready,
// gets a sandbox of its own whose policy was in force before its container
// started (the pooled one ran without it).
func TestEgressBeforeAnythingRuns(t *testing.T) {
	drv := newExitDriver()
	netw := &policyNetwork{drv: drv, policies: map[string]network.Policy{}}
	st, err := sqlstore.Open(t.Context(), filepath.Join(t.TempDir(), "sbx.db"), &changes{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	agents := &fakeAgents{byID: map[string]*fakeAgent{}}
	tpl := template.Template{ID: "base", Names: []string{"base"}, Rootfs: "/nonexistent", CPUCount: 1, MemoryMB: 256, StartCmd: "serve"}
	m := New(Config{Data: datadir.Layout{Root: t.TempDir()}, AgentDir: t.TempDir(), NodeID: "n1"}, slog.New(slog.DiscardHandler),
		st, drv, netw, oneTemplate{tpl})
	m.dial = agents.dial
	m.StartPools(t.Context(), map[string]PoolSize{"base": {Min: 1, Max: 1}})
	waitFor(t, "a pooled sandbox", func() bool { return m.PooledReady()["base"] == 1 })
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		m.Close(ctx)
	})
	deny := network.Policy{Deny: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}
	sb, err := m.Create(t.Context(), CreateRequest{TeamID: "t1", Template: "base", AllowInternet: true, Egress: deny})
	if err != nil {
		t.Fatal(err)
	}
	if m.PooledReady()["base"] != 1 {
		t.Error("the create with a policy took the pooled sandbox, which ran without it")
	}
	if got := netw.PolicyOf(sb.ID); len(got.Deny) != 1 {
		t.Fatalf("policy of the new sandbox = %+v; want %+v", got, deny)
	}
	netw.mu.Lock()
	late := append([]string(nil), netw.late...)
	netw.mu.Unlock()
	if len(late) > 0 {
		t.Errorf("sandboxes that ran before their egress policy was set: %v", late)
	}
}
