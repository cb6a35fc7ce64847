package storetest

import (
	"errors"
	"slices"
	"testing"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
)

// LayersStore is what the layers suite needs: the published stacks and
// the sandbox rows a move hands from node to node.
type LayersStore interface {
	store.Layers
	store.Store
}

// RunLayers runs the published layers' conformance suite.
func RunLayers(t *testing.T, newStore func(t *testing.T) LayersStore) {
	t.Run("Stacks", func(t *testing.T) { testLayerStacks(t, newStore(t)) })
	t.Run("MoveSandbox", func(t *testing.T) { testMoveSandbox(t, newStore(t)) })
	t.Run("KeptLayers", func(t *testing.T) { testKeptLayers(t, newStore(t)) })
}

func testLayerStacks(t *testing.T, s LayersStore) {
	ctx := t.Context()
	d1, d2 := "sha256:"+hex64('1'), "sha256:"+hex64('2')
	stack := []store.LayerRef{{Digest: d1, Size: 10, Path: "/a/layers/k1/diff"}, {Digest: d2, Size: 20, Path: "/a/layers/k2/diff"},
		{Path: "/var/cache/sbx/rootfs/base-x/rootfs"}}
	if got, err := s.Layers(ctx, store.LayerOwnerBuild, "b1"); err != nil || len(got) != 0 {
		t.Fatalf("Layers of an unpublished build = %v, %v; want none", got, err)
	}
	if err := s.SetLayers(ctx, store.LayerOwnerBuild, "b1", stack, nodeBase); err != nil {
		t.Fatal(err)
	}
	if err := s.SetLayers(ctx, store.LayerOwnerSandbox, "b1", stack[:1], nodeBase); err != nil {
		t.Fatal(err)
	}
	got, err := s.Layers(ctx, store.LayerOwnerBuild, "b1")
	if err != nil || !slices.Equal(got, stack) {
		t.Fatalf("Layers = %+v, %v; want %+v (topmost first)", got, err, stack)
	}
	// Replacing a stack drops layers it no longer has.
	if err := s.SetLayers(ctx, store.LayerOwnerBuild, "b1", stack[1:], nodeBase); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Layers(ctx, store.LayerOwnerBuild, "b1"); !slices.Equal(got, stack[1:]) {
		t.Fatalf("Layers after replace = %+v, want %+v", got, stack[1:])
	}
	if ds, err := s.LayerDigests(ctx); err != nil || !slices.Equal(ds, []string{d1, d2}) {
		t.Fatalf("LayerDigests = %v, %v; want [%s %s] (each once, none empty)", ds, err, d1, d2)
	}
	if err := s.DeleteLayers(ctx, store.LayerOwnerBuild, "b1"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Layers(ctx, store.LayerOwnerBuild, "b1"); len(got) != 0 {
		t.Fatalf("Layers after delete = %+v", got)
	}
	if got, _ := s.Layers(ctx, store.LayerOwnerSandbox, "b1"); len(got) != 1 {
		t.Fatalf("deleting a build's stack touched a sandbox's of the same id: %+v", got)
	}
}

func hex64(c byte) string {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return string(b)
}

// A paused sandbox moves to one node only; the node it left can no longer
// write its row; a running sandbox does not move.
func testMoveSandbox(t *testing.T, s LayersStore) {
	ctx := t.Context()
	team, err := s.CreateTeam(ctx, "movers", "e2b_eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee")
	if err != nil {
		t.Fatal(err)
	}
	sb := sample("sbx-moving", team.ID, nodeBase, nil)
	sb.NodeID = "node-a"
	if err := s.InsertSandbox(ctx, sb, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.MoveSandbox(ctx, sb.ID, "node-a", "node-b"); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("moving a running sandbox = %v, want a conflict", err)
	}
	paused := sb
	paused.State = store.StatePaused
	if err := s.UpdateSandbox(ctx, paused, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.MoveSandbox(ctx, sb.ID, "node-a", "node-b"); err != nil {
		t.Fatalf("move: %v", err)
	}
	if err := s.MoveSandbox(ctx, sb.ID, "node-a", "node-c"); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("a second claim from the old owner = %v, want a conflict", err)
	}
	// node-a's stale view: resuming or killing it there is refused.
	for _, state := range []store.SandboxState{store.StateRunning, store.StateKilled} {
		stale := paused
		stale.State = state
		if err := s.UpdateSandbox(ctx, stale, nil); !errors.Is(err, store.ErrMoved) || !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("node-a writing the moved sandbox %s = %v, want ErrMoved (not found)", state, err)
		}
	}
	mine := paused
	mine.NodeID, mine.State = "node-b", store.StateRunning
	if err := s.UpdateSandbox(ctx, mine, nil); err != nil {
		t.Fatalf("the new owner's write: %v", err)
	}
	if got, _ := s.Sandbox(ctx, sb.ID); got.NodeID != "node-b" || got.State != store.StateRunning {
		t.Fatalf("row = node %q state %s, want node-b running", got.NodeID, got.State)
	}
	if err := s.MoveSandbox(ctx, "sbx-nosuch", "node-a", "node-b"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("moving an unknown sandbox = %v, want not found", err)
	}
}
