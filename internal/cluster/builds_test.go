package cluster

import (
	"context"
	"testing"
	"time"

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
