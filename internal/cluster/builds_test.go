package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/placement"
	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/template"
)

type fakeBuilds map[string]template.Template

func (f fakeBuilds) CurrentBuild(_ context.Context, teamID, ref string) (template.Template, bool, error) {
	t, ok := f[ref]
	return t, ok && t.TeamID == teamID, nil
}

// TestCreatePrefersLayers: a team template's sandbox goes to the node
// whose heartbeat says it holds the template's current build, though
// another node is freer; a template no node holds goes by free capacity.
func TestCreatePrefersLayers(t *testing.T) {
	st := newStore(t)
	na, nb := newNode(t, "a", created("sb")), newNode(t, "b", created("sb"))
	now := time.Now().UTC()
	register(t, st, "a", na.srv.URL, 64000, now) // the freer
	if err := st.Heartbeat(t.Context(), store.Node{ID: "b", Boot: "b", StartedAt: now, HeartbeatAt: now,
		NodeLoad: store.NodeLoad{AdvertiseURL: nb.srv.URL, CPUMillis: 8000, MemoryMiB: 16384, Builds: "bld-old bld-1"}}); err != nil {
		t.Fatal(err)
	}
	insert(t, st, "sb", "team1", "b")
	nodes := NewNodes(st, time.Minute, quiet)
	if err := nodes.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	sbs := NewSandboxes(st, nodes, placement.New(nodes, placement.Config{Seed: 1}), NewClient(NewSigner(testSecret)),
		template.NewRegistry(quiet), quiet)
	sbs.SetBuilds(fakeBuilds{
		"my-tpl":  {ID: "t1", BuildID: "bld-1", TeamID: "team1", CPUCount: 1, MemoryMB: 256},
		"new-tpl": {ID: "t2", BuildID: "bld-2", TeamID: "team1", CPUCount: 1, MemoryMB: 256},
	})
	for range 5 {
		if _, err := sbs.Create(t.Context(), sandbox.CreateRequest{TeamID: "team1", Template: "my-tpl"}); err != nil {
			t.Fatal(err)
		}
	}
	if a, b := len(na.requests()), len(nb.requests()); a != 0 || b != 5 {
		t.Errorf("creates of a template node b holds: a %d, b %d; want all on b", a, b)
	}
	if _, err := sbs.Create(t.Context(), sandbox.CreateRequest{TeamID: "team1", Template: "new-tpl"}); err != nil {
		t.Fatal(err)
	}
	if a := len(na.requests()); a != 1 {
		t.Errorf("a template no node holds went to b; want the freer node a")
	}
}

// fakeSnapshots finds snapshots by ID for their team.
type fakeSnapshots map[string]store.Snapshot

func (f fakeSnapshots) Find(_ context.Context, teamID, ref string) (store.Snapshot, bool, error) {
	s, ok := f[ref]
	return s, ok && s.TeamID == teamID, nil
}

// TestCreatePrefersSnapshot: a create from a sandbox snapshot goes to the
// node whose heartbeat names a copy of it, though another node is freer;
// a memory snapshot goes only to the node its row names, even before its
// heartbeat names it, and fails naming the snapshot when that node is
// gone; another team's reference is placed as a template.
func TestCreatePrefersSnapshot(t *testing.T) {
	st := newStore(t)
	na, nb := newNode(t, "a", created("sb")), newNode(t, "b", created("sb"))
	now := time.Now().UTC()
	register(t, st, "a", na.srv.URL, 64000, now) // the freer
	if err := st.Heartbeat(t.Context(), store.Node{ID: "b", Boot: "b", StartedAt: now, HeartbeatAt: now,
		NodeLoad: store.NodeLoad{AdvertiseURL: nb.srv.URL, CPUMillis: 8000, MemoryMiB: 16384,
			Builds: "bld-1 " + store.NodeSnapshotPrefix + "snap-fs"}}); err != nil {
		t.Fatal(err)
	}
	insert(t, st, "sb", "team1", "b")
	nodes := NewNodes(st, time.Minute, quiet)
	if err := nodes.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	sbs := NewSandboxes(st, nodes, placement.New(nodes, placement.Config{Seed: 1}), NewClient(NewSigner(testSecret)),
		template.NewRegistry(quiet), quiet)
	snaps := fakeSnapshots{
		"snap-fs":   {ID: "snap-fs", TeamID: "team1", BuildID: "bld-9", Template: []byte(`{"cpuCount":1,"memoryMB":256}`)},
		"snap-mem":  {ID: "snap-mem", TeamID: "team1", MemoryNode: "b", Template: []byte(`{}`)},
		"snap-lost": {ID: "snap-lost", TeamID: "team1", MemoryNode: "c", Template: []byte(`{}`)},
	}
	sbs.SetSnapshots(snaps)
	for _, ref := range []string{"snap-fs", "snap-fs", "snap-mem", "snap-mem"} {
		if _, err := sbs.Create(t.Context(), sandbox.CreateRequest{TeamID: "team1", Template: ref}); err != nil {
			t.Fatal(err)
		}
	}
	if a, b := len(na.requests()), len(nb.requests()); a != 0 || b != 4 {
		t.Errorf("creates from snapshots node b holds: a %d, b %d; want all on b", a, b)
	}
	_, err := sbs.Create(t.Context(), sandbox.CreateRequest{TeamID: "team1", Template: "snap-lost"})
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "snap-lost") {
		t.Errorf("create from a memory snapshot no live node holds = %v; want an error naming it", err)
	}
	// Another team's reference: no snapshot for it (the node says so).
	if _, err := sbs.Create(t.Context(), sandbox.CreateRequest{TeamID: "team2", Template: "snap-mem"}); err != nil {
		t.Fatal(err)
	}
	if a := len(na.requests()); a != 1 {
		t.Errorf("another team's reference was placed by the snapshot; want by free capacity (node a)")
	}
}
