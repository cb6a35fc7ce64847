package liveness

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqldb/sqldbtest"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
	"github.com/sbxdev/sbx/internal/store/storetest"
)

// TestSweepRecordsLostNodesSandboxes: on both databases, a node silent
// past the grace is declared lost, its running sandboxes are recorded
// killed (node_lost, with their events), its paused ones stay, other
// nodes' sandboxes are untouched, and the lost process is fenced once.
func TestSweepRecordsLostNodesSandboxes(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, dialect sqldb.Dialect) {
		rec := &storetest.Recorder{}
		st := sqlstore.New(sqldbtest.Open(t, dialect), rec)
		log := slog.New(slog.DiscardHandler)
		ctx := t.Context()
		clock := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
		now := func() time.Time { return clock }
		cfg := Config{Interval: time.Second, Grace: 10 * time.Second}

		fenced := 0
		a := NewBeater(st, "node-a", "a:1", cfg, log, func(context.Context) { fenced++ })
		b := NewBeater(st, "node-b", "b:1", cfg, log, nil)
		a.now, b.now = now, now
		for _, x := range []*Beater{a, b} {
			if err := x.Beat(ctx); err != nil {
				t.Fatal(err)
			}
		}
		team, err := st.CreateTeam(ctx, "t", "e2b_1111111111111111111111111111111111111111")
		if err != nil {
			t.Fatal(err)
		}
		mk := func(id, node string, state store.SandboxState) {
			sb := store.Sandbox{ID: id, TeamID: team.ID, TemplateID: "base", State: state, NodeID: node,
				StartedAt: clock, EndAt: clock.Add(time.Hour)}
			if err := st.InsertSandbox(ctx, sb, nil); err != nil {
				t.Fatal(err)
			}
		}
		mk("a-run", "node-a", store.StateRunning)
		mk("a-paused", "node-a", store.StatePaused)
		mk("b-run", "node-b", store.StateRunning)

		sw := NewSweeper(st, cfg, log)
		sw.now = now
		if err := sw.Sweep(ctx); err != nil { // the sweeper reaches the database from now on
			t.Fatal(err)
		}
		clock = clock.Add(8 * time.Second) // within the grace: nothing happens
		if err := b.Beat(ctx); err != nil {
			t.Fatal(err)
		}
		if err := sw.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		if sb, _ := st.Sandbox(ctx, "a-run"); sb.State != store.StateRunning {
			t.Fatalf("a sandbox of a node silent for 8 s of a 10 s grace is %s", sb.State)
		}
		clock = clock.Add(5 * time.Second) // node-a silent 13 s; node-b beat 5 s ago
		rec.Changes = nil
		if err := sw.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		want := map[string]store.SandboxState{"a-run": store.StateKilled, "a-paused": store.StatePaused, "b-run": store.StateRunning}
		for id, state := range want {
			sb, err := st.Sandbox(ctx, id)
			if err != nil || sb.State != state {
				t.Errorf("%s after the sweep: %s (%v), want %s", id, sb.State, err, state)
			}
			if id == "a-run" && sb.KillReason != ReasonNodeLost {
				t.Errorf("a-run kill reason %q, want %q", sb.KillReason, ReasonNodeLost)
			}
		}
		if len(rec.Changes) != 1 || rec.Changes[0].Type != "sandbox.lifecycle.killed" ||
			rec.Changes[0].Data["kill_reason"] != ReasonNodeLost || rec.Changes[0].Data["node_id"] != "node-a" {
			t.Errorf("recorded changes %+v; want one killed event for a-run naming node-a", rec.Changes)
		}
		if err := sw.Sweep(ctx); err != nil || len(rec.Changes) != 1 {
			t.Errorf("a second sweep: %v, %d changes; want nothing new", err, len(rec.Changes))
		}

		// node-a's process was only slow: it learns it was declared lost.
		for range 2 {
			if err := a.Beat(ctx); err == nil {
				t.Fatal("the lost process's heartbeat was accepted")
			}
		}
		if fenced != 1 {
			t.Errorf("the fenced callback ran %d times, want once", fenced)
		}
	})
}

// failingRepo fails every call while down.
type failingRepo struct {
	Repo
	down bool
}

func (f *failingRepo) LostNodes(ctx context.Context) ([]string, error) {
	if f.down {
		return nil, context.DeadlineExceeded
	}
	return f.Repo.LostNodes(ctx)
}

func (f *failingRepo) MarkLost(ctx context.Context, staleBefore, now time.Time) ([]string, error) {
	if f.down {
		return nil, context.DeadlineExceeded
	}
	return f.Repo.MarkLost(ctx, staleBefore, now)
}

// TestSweepAfterOutageWaitsAGrace: when the database was out of reach,
// every node's heartbeat is old once it is back; the sweeper declares
// nobody lost until the nodes have had a grace to beat again.
func TestSweepAfterOutageWaitsAGrace(t *testing.T) {
	st := sqlstore.New(sqldbtest.Open(t, sqldb.SQLite), nil)
	log := slog.New(slog.DiscardHandler)
	ctx := t.Context()
	clock := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	cfg := Config{Interval: time.Second, Grace: 10 * time.Second}
	n := NewBeater(st, "node-a", "a:1", cfg, log, nil)
	n.now = now
	if err := n.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	repo := &failingRepo{Repo: st}
	sw := NewSweeper(repo, cfg, log)
	sw.now = now
	if err := sw.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	repo.down = true // a 30 s outage: node-a cannot beat either
	for range 30 {
		clock = clock.Add(time.Second)
		if err := sw.Sweep(ctx); err == nil {
			t.Fatal("a sweep during the outage succeeded")
		}
	}
	repo.down = false
	clock = clock.Add(time.Second)
	if err := sw.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if lost, _ := st.LostNodes(ctx); len(lost) != 0 {
		t.Fatalf("right after the outage the sweeper declared %v lost; want none before a grace", lost)
	}
	clock = clock.Add(2 * time.Second)
	if err := n.Beat(ctx); err != nil { // node-a beats again
		t.Fatal(err)
	}
	clock = clock.Add(9 * time.Second)
	if err := sw.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if lost, _ := st.LostNodes(ctx); len(lost) != 0 {
		t.Fatalf("node-a, beating again after the outage, was declared lost: %v", lost)
	}
}

// TestDrainSurvivesRestart: a node the admin drained, restarted (a new
// Beater: a new boot), finds itself draining in the registry before its
// first heartbeat, which would record it ready; a ready node and a node
// never seen are not draining.
func TestDrainSurvivesRestart(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, dialect sqldb.Dialect) {
		testDrainSurvivesRestart(t, sqlstore.New(sqldbtest.Open(t, dialect), nil))
	})
}

func testDrainSurvivesRestart(t *testing.T, repo Repo) {
	ctx := t.Context()
	log := slog.New(slog.DiscardHandler)
	cfg := Config{Interval: time.Second, Grace: 10 * time.Second}
	for _, drained := range []bool{true, false} {
		id := fmt.Sprintf("node-drained-%v", drained)
		before := NewBeater(repo, id, "a:1", cfg, log, nil)
		before.SetDraining(func() bool { return drained })
		if err := before.Beat(ctx); err != nil {
			t.Fatal(err)
		}
		after := NewBeater(repo, id, "a:1", cfg, log, nil) // the restarted process
		if got, err := after.WasDraining(ctx); err != nil || got != drained {
			t.Errorf("%s after a restart: draining %v, %v; want %v", id, got, err, drained)
		}
	}
	if got, err := NewBeater(repo, "never-seen", "b:1", cfg, log, nil).WasDraining(ctx); err != nil || got {
		t.Errorf("a node never seen: draining %v, %v; want false", got, err)
	}
}
