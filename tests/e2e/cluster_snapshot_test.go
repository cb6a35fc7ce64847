package e2e

import (
	"context"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/sdk"
)

// TestClusterSnapshot (cluster issue, "snapshots in the blob store"): a
// snapshot of a sandbox taken through one api replica is listed through
// the other; a sandbox started from it goes to the node holding a copy,
// and with that node dead starts on the other node, which pulls its
// layers from the blob store, with the files written before the snapshot.
// Another team neither lists, starts nor deletes it; deleted through one
// replica, the copy a node holds no longer starts.
func TestClusterSnapshot(t *testing.T) {
	// One snapshot per team: the cap counts the table, every node's.
	c := startClusterSpec(t, clusterSpec{apis: 2, nodes: 2, nodeFlags: []string{"--team-max-snapshots", "1"}})
	api1, api2 := c.apis[0].Client(t), c.apis[1].Client(t)
	src, err := api1.Create(opCtx(t), sdk.CreateOptions{Template: "base"})
	if err != nil {
		t.Fatalf("create through api-1: %v\n%s", err, c.api.Log())
	}
	t.Cleanup(func() { _ = src.Kill(context.Background()) })
	holder := c.nodeOf(t, src.ID)
	if holder < 0 {
		t.Fatalf("sandbox %s runs on no node", src.ID)
	}
	runIn(t, src, "echo written before the snapshot > /home/user/kept.txt")
	t0 := time.Now()
	snap, err := api1.CreateSnapshot(opCtx(t), src.ID, "cluster-snap")
	if err != nil {
		t.Fatalf("snapshot through api-1: %v\nnode log:\n%s", err, c.nodes[holder].Log())
	}
	t.Logf("snapshot through an api replica (capture + publish + row): %s", time.Since(t0).Round(time.Millisecond))
	if snap.ID != "cluster-snap:default" || snap.Memory {
		t.Fatalf("snapshot = %+v; want cluster-snap:default, filesystem only", snap)
	}
	// The other replica lists it from the shared table.
	list, err := api2.ListSnapshots(opCtx(t), sdk.SnapshotListOptions{})
	if err != nil || len(list) != 1 || list[0].ID != "cluster-snap:default" || list[0].SandboxID != src.ID {
		t.Fatalf("GET /snapshots through api-2 = %+v, %v; want cluster-snap:default of %s", list, err, src.ID)
	}

	// Another team sees nothing and starts nothing.
	otherKey := c.api.CreateTeam(t, "snap-other")
	other := c.apis[1].ClientWithKey(t, otherKey)
	if got, err := other.ListSnapshots(opCtx(t), sdk.SnapshotListOptions{}); err != nil || len(got) != 0 {
		t.Errorf("another team's GET /snapshots = %+v, %v; want none", got, err)
	}
	if sb, err := other.Create(opCtx(t), sdk.CreateOptions{Template: "cluster-snap:default"}); err == nil {
		_ = sb.Kill(context.Background())
		t.Errorf("another team started the snapshot (sandbox %s)", sb.ID)
	} else if !sdk.IsNotFound(err) {
		t.Errorf("another team's create from the snapshot = %v; want not found", err)
	}
	if err := other.DeleteSnapshot(opCtx(t), "cluster-snap:default"); !sdk.IsNotFound(err) {
		t.Errorf("another team's delete of the snapshot = %v; want not found", err)
	}

	// Placement prefers the node holding the copy (once a heartbeat and a
	// refresh carried it).
	time.Sleep(3 * time.Second)
	start := func(via *sdk.Client) (*sdk.Sandbox, int) {
		t.Helper()
		sb, err := via.Create(opCtx(t), sdk.CreateOptions{Template: "cluster-snap:default"})
		if err != nil {
			t.Fatalf("create from the snapshot: %v\nnode logs:\n%s\n---\n%s", err, c.nodes[0].Log(), c.nodes[1].Log())
		}
		t.Cleanup(func() { _ = sb.Kill(context.Background()) })
		if got := runIn(t, sb, "cat /home/user/kept.txt"); got != "written before the snapshot\n" {
			t.Errorf("sandbox from the snapshot: kept.txt = %q", got)
		}
		return sb, c.nodeOf(t, sb.ID)
	}
	for range 2 {
		if _, n := start(api2); n != holder {
			t.Errorf("a sandbox from the snapshot ran on node-%d; want node-%d, which holds it", n+1, holder+1)
		}
	}
	// With the holder dead, the other node pulls it and starts it.
	c.nodes[holder].Stop(syscall.SIGKILL)
	t0 = time.Now()
	moved, n := start(api2)
	t.Logf("create + first command from the snapshot on the node without it (pull included): %s", time.Since(t0).Round(time.Millisecond))
	if n != 1-holder {
		t.Fatalf("with node-%d dead, the sandbox from the snapshot ran on node %d", holder+1, n+1)
	}
	if !strings.Contains(c.nodes[n].Log(), "sandbox snapshot pulled from the blob store") {
		t.Errorf("node-%d does not log the pull of the snapshot", n+1)
	}
	// The cap counts the snapshot node-1 took though node-2 takes this
	// one; new content under the same name adds none and replaces the
	// copy node-2 pulled.
	if s, err := api2.CreateSnapshot(opCtx(t), moved.ID, ""); !sdk.IsRateLimited(err) {
		t.Errorf("a second snapshot of a team capped at one, on the other node = %+v, %v; want 429", s, err)
	}
	runIn(t, moved, "echo second content > /home/user/kept.txt")
	if _, err := api2.CreateSnapshot(opCtx(t), moved.ID, "cluster-snap"); err != nil {
		t.Fatalf("new content for the named snapshot on node-%d: %v", n+1, err)
	}
	again, err := api1.Create(opCtx(t), sdk.CreateOptions{Template: "cluster-snap:default"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = again.Kill(context.Background()) })
	if got := runIn(t, again, "cat /home/user/kept.txt"); got != "second content\n" {
		t.Errorf("sandbox from the snapshot's new content: kept.txt = %q", got)
	}
	if list, _ := api1.ListSnapshots(opCtx(t), sdk.SnapshotListOptions{}); len(list) != 1 || list[0].SandboxID != moved.ID {
		t.Errorf("after new content: %+v; want cluster-snap only, of %s", list, moved.ID)
	}

	// Deleted through api-1: gone from every list, and the copy node n
	// now holds no longer starts.
	if err := api1.DeleteSnapshot(opCtx(t), "cluster-snap:default"); err != nil {
		t.Fatalf("delete through api-1: %v", err)
	}
	if got, err := api2.ListSnapshots(opCtx(t), sdk.SnapshotListOptions{}); err != nil || len(got) != 0 {
		t.Errorf("GET /snapshots through api-2 after the delete = %+v, %v", got, err)
	}
	if sb, err := api2.Create(opCtx(t), sdk.CreateOptions{Template: "cluster-snap:default"}); err == nil {
		_ = sb.Kill(context.Background())
		t.Errorf("a deleted snapshot started on node-%d from its copy", n+1)
	} else if !sdk.IsNotFound(err) {
		t.Errorf("create from the deleted snapshot = %v; want not found", err)
	}
	r := c.apis[1].Raw(t, http.MethodGet, "/snapshots", "", map[string]string{"X-API-Key": c.api.APIKey})
	if r.Status != http.StatusOK || strings.TrimSpace(r.Body) != "[]" {
		t.Errorf("GET /snapshots after the delete = %d %s", r.Status, r.Body)
	}
}
