package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/cluster"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/sdk"
)

// TestClusterPlacesOnPool (cluster issue, placement by pooled sandboxes):
// node-2 keeps one pooled sandbox of base, node-1 none. Each create of
// base through the api replica goes to node-2, which reports its ready
// pooled sandbox in its heartbeat, although node-1 is emptier: without
// the pool tier the second create would go to node-1 (fewer sandboxes,
// less CPU reserved).
func TestClusterPlacesOnPool(t *testing.T) {
	c := startClusterSpec(t, clusterSpec{apis: 1, nodes: 2, nodeExtra: map[int][]string{1: {"--pool", "base=1:1"}}})
	client := c.api.Client(t)
	db, err := sqldb.Open(context.Background(), c.dsn, sqldb.Options{NoMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	// pooled is what the node's heartbeat reports, and when it beat.
	pooled := func(node string) (string, time.Time) {
		var p string
		var at int64
		if err := db.QueryRowContext(context.Background(), `SELECT pooled, heartbeat_at FROM nodes WHERE id = $1`, node).Scan(&p, &at); err != nil {
			t.Fatal(err)
		}
		return p, time.UnixMilli(at)
	}
	since := time.Now()
	for i := range 3 {
		// The pool refills after each claim; wait for a heartbeat of
		// node-2 from after the claim (the row says base=1 until then)
		// that reports it again, and for the api replica to read that.
		waitFor(t, "node-2 to report a ready pooled sandbox of base", func() bool {
			p, at := pooled("node-2")
			return p == "base=1" && at.After(since)
		})
		if p, _ := pooled("node-1"); p != "" {
			t.Fatalf("node-1, which has no pool, reports %q", p)
		}
		time.Sleep(2*cluster.RefreshEvery + 300*time.Millisecond)
		s, err := client.Create(opCtx(t), sdk.CreateOptions{Timeout: 10 * time.Minute})
		if err != nil {
			t.Fatalf("create %d through the api replica: %v\napi log:\n%s", i, err, c.api.Log())
		}
		createdIDs.Store(s.ID, true)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_ = s.Kill(ctx)
		})
		since = time.Now()
		if on := c.nodeOf(t, s.ID); on != 1 {
			t.Fatalf("create %d went to node-%d; want node-2, the one with a pooled sandbox of base", i, on+1)
		}
		if res, err := s.Commands.Run(opCtx(t), "echo ok", sdk.RunOptions{}); err != nil || res.Stdout != "ok\n" {
			t.Fatalf("command in the pooled sandbox: %+v, %v", res, err)
		}
	}

	// The blob store's garbage collection runs in exactly one process of
	// the cluster, the elected one (it collects once at once on winning).
	collectors := func() (n int) {
		for _, p := range append(append([]*Server{}, c.apis...), c.nodes...) {
			if strings.Contains(p.Log(), "msg=\"blob gc\"") {
				n++
			}
		}
		return n
	}
	waitFor(t, "a process to collect the blob store", func() bool { return collectors() > 0 })
	if n := collectors(); n != 1 {
		t.Errorf("%d processes collected the blob store; want the one elected", n)
	}
}
