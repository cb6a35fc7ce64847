package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
)

// NodesStore is what the nodes suite needs: the registry and the sandbox
// rows whose writes a lost node must not undo.
type NodesStore interface {
	store.Nodes
	store.Store
}

// NodesFactory returns a fresh, empty store.
type NodesFactory func(t *testing.T) NodesStore

// RunNodes runs the node registry's conformance suite.
func RunNodes(t *testing.T, newStore NodesFactory) {
	t.Run("HeartbeatAndLost", func(t *testing.T) { testNodesLost(t, newStore(t)) })
	t.Run("KilledIsFinal", func(t *testing.T) { testKilledIsFinal(t, newStore(t)) })
	t.Run("Load", func(t *testing.T) { testNodeLoad(t, newStore(t)) })
	t.Run("Draining", func(t *testing.T) { testNodeDraining(t, newStore(t)) })
}

var nodeBase = time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)

func beat(t *testing.T, s store.Nodes, id, boot string, at time.Time) error {
	t.Helper()
	return s.Heartbeat(t.Context(), store.Node{ID: id, Boot: boot, Address: "127.0.0.1:1", StartedAt: nodeBase, HeartbeatAt: at})
}

func testNodesLost(t *testing.T, s store.Nodes) {
	ctx := t.Context()
	for _, n := range []struct {
		id, boot string
		at       time.Time
	}{{"node-a", "a1", nodeBase}, {"node-b", "b1", nodeBase.Add(20 * time.Second)}} {
		if err := beat(t, s, n.id, n.boot, n.at); err != nil {
			t.Fatalf("first heartbeat of %s: %v", n.id, err)
		}
	}
	if err := beat(t, s, "node-a", "a1", nodeBase.Add(5*time.Second)); err != nil {
		t.Fatalf("second heartbeat: %v", err)
	}
	nodes, err := s.Nodes(ctx)
	if err != nil || len(nodes) != 2 || nodes[0].ID != "node-a" || !nodes[0].HeartbeatAt.Equal(nodeBase.Add(5*time.Second)) ||
		nodes[0].State != store.NodeReady {
		t.Fatalf("Nodes = %+v, %v; want node-a (beat at +5s, ready) and node-b", nodes, err)
	}

	lost, err := s.MarkLost(ctx, nodeBase.Add(10*time.Second), nodeBase.Add(25*time.Second))
	if err != nil || !slices.Equal(lost, []string{"node-a"}) {
		t.Fatalf("MarkLost(stale before +10s) = %v, %v; want [node-a]", lost, err)
	}
	if again, err := s.MarkLost(ctx, nodeBase.Add(10*time.Second), nodeBase.Add(26*time.Second)); err != nil || len(again) != 0 {
		t.Errorf("MarkLost again = %v, %v; want none (already lost)", again, err)
	}
	if ids, err := s.LostNodes(ctx); err != nil || !slices.Equal(ids, []string{"node-a"}) {
		t.Errorf("LostNodes = %v, %v; want [node-a]", ids, err)
	}

	// The boot that was declared lost is fenced; a restart (new boot) is not.
	if err := beat(t, s, "node-a", "a1", nodeBase.Add(30*time.Second)); !errors.Is(err, store.ErrFenced) {
		t.Errorf("heartbeat of the lost boot = %v, want ErrFenced", err)
	}
	if err := beat(t, s, "node-a", "a2", nodeBase.Add(31*time.Second)); err != nil {
		t.Fatalf("heartbeat of a new boot of a lost node: %v", err)
	}
	if ids, err := s.LostNodes(ctx); err != nil || len(ids) != 0 {
		t.Errorf("LostNodes after node-a restarted = %v, %v; want none", ids, err)
	}
	nodes, _ = s.Nodes(ctx)
	if nodes[0].State != store.NodeReady || nodes[0].Boot != "a2" || !nodes[0].LostAt.IsZero() {
		t.Errorf("node-a after its restart: %+v; want ready, boot a2, no lost time", nodes[0])
	}
}

// testKilledIsFinal: once a sandbox is recorded killed (by its node or by
// the sweep of a lost node), no write brings it back or kills it again.
func testKilledIsFinal(t *testing.T, s NodesStore) {
	ctx := t.Context()
	team, err := s.CreateTeam(ctx, "fenced", "e2b_ffffffffffffffffffffffffffffffffffffffff")
	if err != nil {
		t.Fatal(err)
	}
	sb := sample("sbx-fenced", team.ID, nodeBase, nil)
	sb.NodeID = "node-a"
	if err := s.InsertSandbox(ctx, sb, nil); err != nil {
		t.Fatal(err)
	}
	killed := sb
	killed.State, killed.KilledAt, killed.KillReason = store.StateKilled, nodeBase.Add(time.Minute), "node_lost"
	if err := s.UpdateSandbox(ctx, killed, nil); err != nil {
		t.Fatalf("record the kill: %v", err)
	}
	for _, state := range []store.SandboxState{store.StateRunning, store.StatePaused, store.StateKilled} {
		stale := sb
		stale.State, stale.KillReason = state, "stale"
		if err := s.UpdateSandbox(ctx, stale, nil); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("a stale write making the killed sandbox %s = %v, want ErrNotFound", state, err)
		}
	}
	got, err := s.Sandbox(ctx, sb.ID)
	if err != nil || got.State != store.StateKilled || got.KillReason != "node_lost" {
		t.Errorf("the sandbox after stale writes: %+v, %v; want killed (node_lost)", got, err)
	}
}

// testNodeDraining: a heartbeat records the node draining or ready again,
// never lost; a draining node that goes silent is declared lost.
func testNodeDraining(t *testing.T, s store.Nodes) {
	ctx := t.Context()
	n := store.Node{ID: "node-a", Boot: "a1", StartedAt: nodeBase, HeartbeatAt: nodeBase, State: store.NodeDraining}
	state := func() string {
		t.Helper()
		nodes, err := s.Nodes(ctx)
		if err != nil || len(nodes) != 1 {
			t.Fatalf("Nodes = %+v, %v; want node-a", nodes, err)
		}
		return nodes[0].State
	}
	for i, want := range []string{store.NodeDraining, store.NodeReady, store.NodeDraining, store.NodeReady} {
		n.HeartbeatAt = nodeBase.Add(time.Duration(i) * time.Second)
		n.State = want
		if i == 3 {
			n.State = store.NodeLost // a heartbeat never declares its node lost
		}
		if err := s.Heartbeat(ctx, n); err != nil {
			t.Fatalf("heartbeat %d: %v", i, err)
		}
		if got := state(); got != want {
			t.Fatalf("after heartbeat %d (state %q) the node is %q, want %q", i, n.State, got, want)
		}
	}
	n.State, n.HeartbeatAt = store.NodeDraining, nodeBase.Add(5*time.Second)
	if err := s.Heartbeat(ctx, n); err != nil {
		t.Fatal(err)
	}
	lost, err := s.MarkLost(ctx, nodeBase.Add(10*time.Second), nodeBase.Add(20*time.Second))
	if err != nil || !slices.Equal(lost, []string{"node-a"}) {
		t.Fatalf("MarkLost of a silent draining node = %v, %v; want [node-a]", lost, err)
	}
	if got := state(); got != store.NodeLost {
		t.Errorf("silent draining node is %q, want lost", got)
	}
}
