package webhook

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/events"
)

// TestEnginesShareQueues: two engines (two servers' worth) on one database
// send every delivery of several webhooks exactly once (each event's
// sequence number once per webhook: in event order once sorted by it),
// while one of them stops halfway and the other takes its
// queues over.
func TestEnginesShareQueues(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.Timeout, cfg.Lease = 300*time.Millisecond, time.Second
	cfgA, cfgB := cfg, cfg
	cfgA.Node, cfgB.Node = "node-a", "node-b"
	e := newEnv(t, cfgA)
	const hooks, n = 4, 300
	rc := newReceiver(t, nil)
	var ids []string
	for range hooks {
		ids = append(ids, createHook(t, e.eng, "t", rc.srv.URL).ID)
	}
	// After the webhooks exist: SQLite has no notifications between
	// engines (one server owns a SQLite database).
	engB, err := NewEngine(e.db, e.log, cfgB, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	stopA := run(t, e.eng)
	run(t, engB)
	for i := range n {
		if err := e.log.Append(t.Context(), &events.Event{Type: events.SandboxCreated, TeamID: "t", SandboxID: fmt.Sprintf("sb%04d", i)}); err != nil {
			t.Fatal(err)
		}
		if i == n/2 {
			stopA()
		}
	}
	waitFor(t, "every delivery", func() bool { return len(rc.all()) >= hooks*n })
	time.Sleep(200 * time.Millisecond)     // a duplicate would arrive about now
	seen := map[string][]string{}          // webhook id → sandbox ids in event order
	byDelivery := map[string]int{}         // webhook-id header → arrivals
	for _, d := range bySeq(t, rc.all()) { // receivers order by sbx-event-seq
		var b events.JSON
		_ = json.Unmarshal(d.body, &b)
		seen[d.header.Get("e2b-webhook-id")] = append(seen[d.header.Get("e2b-webhook-id")], b.SandboxID)
		byDelivery[d.header.Get("webhook-id")]++
	}
	if got := len(rc.all()); got != hooks*n {
		t.Errorf("%d requests for %d deliveries", got, hooks*n)
	}
	for id, c := range byDelivery {
		if c != 1 {
			t.Errorf("delivery %s sent %d times", id, c)
		}
	}
	for _, id := range ids {
		got := seen[id]
		for i, sb := range got {
			if want := fmt.Sprintf("sb%04d", i); sb != want {
				t.Fatalf("webhook %s: delivery %d is %s, want %s: out of order", id, i, sb, want)
			}
		}
		if len(got) != n {
			t.Errorf("webhook %s got %d deliveries, want %d", id, len(got), n)
		}
	}
	var pending int
	waitFor(t, "every outcome recorded", func() bool {
		_ = e.db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM webhook_deliveries WHERE state != 'success'`).Scan(&pending)
		return pending == 0
	})
}
