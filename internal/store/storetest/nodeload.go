package storetest

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/store"
)

// testNodeLoad: each heartbeat replaces the node's advertised URL and load
// (api replicas place sandboxes from them), a restart included.
func testNodeLoad(t *testing.T, s store.Nodes) {
	ctx := t.Context()
	first := store.NodeLoad{AdvertiseURL: "http://10.0.0.1:3000", CPUMillis: 8000, MemoryMiB: 16384,
		ReservedCPUMillis: 1000, ReservedMemoryMiB: 512, Sandboxes: 2}
	n := store.Node{ID: "node-a", Boot: "a1", Address: "0.0.0.0:3000", StartedAt: nodeBase, HeartbeatAt: nodeBase, NodeLoad: first}
	if err := s.Heartbeat(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := s.Heartbeat(ctx, store.Node{ID: "node-b", Boot: "b1", StartedAt: nodeBase, HeartbeatAt: nodeBase}); err != nil {
		t.Fatal(err)
	}
	nodes, err := s.Nodes(ctx)
	slices.SortFunc(nodes, func(a, b store.Node) int { return strings.Compare(a.ID, b.ID) })
	if err != nil || len(nodes) != 2 || nodes[0].NodeLoad != first || nodes[1].NodeLoad != (store.NodeLoad{}) {
		t.Fatalf("Nodes = %+v, %v; want node-a with %+v and node-b without load", nodes, err, first)
	}
	later := store.NodeLoad{AdvertiseURL: "http://10.0.0.1:3001", CPUMillis: 8000, MemoryMiB: 16384,
		ReservedCPUMillis: 3500, ReservedMemoryMiB: 4096, Sandboxes: 7, Builds: "build-1 build-2", Pooled: "base=3 team-tpl=1"}
	n.HeartbeatAt, n.NodeLoad = nodeBase.Add(time.Second), later
	if err := s.Heartbeat(ctx, n); err != nil {
		t.Fatal(err)
	}
	n.Boot, n.HeartbeatAt, n.NodeLoad.Sandboxes = "a2", nodeBase.Add(2*time.Second), 0 // restarted
	if err := s.Heartbeat(ctx, n); err != nil {
		t.Fatal(err)
	}
	nodes, _ = s.Nodes(ctx)
	slices.SortFunc(nodes, func(a, b store.Node) int { return strings.Compare(a.ID, b.ID) })
	want := later
	want.Sandboxes = 0
	if nodes[0].NodeLoad != want {
		t.Errorf("node-a after two more heartbeats: %+v; want %+v", nodes[0].NodeLoad, want)
	}
}
