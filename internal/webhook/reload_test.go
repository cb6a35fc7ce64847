package webhook

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
)

// gatedRecords is the real repository whose RecordAttempts waits until
// the gate opens: outcomes stay unrecorded for as long as a test needs.
type gatedRecords struct {
	store.Webhooks
	gate chan struct{}
}

func (g *gatedRecords) RecordAttempts(ctx context.Context, node, boot string, recs []store.AttemptRecord,
	disabled func(ctx context.Context, tx *sqldb.Tx, i int) error) error {
	<-g.gate
	return g.Webhooks.RecordAttempts(ctx, node, boot, recs, disabled)
}

// TestReloadKeepsUnrecordedOutcomes: a reload of the webhooks (another
// server changed one; on PostgreSQL every sbx_webhooks notification) while
// outcomes await their record keeps what those outcomes did in memory: the
// failure streak and a disable. Dropping them made counters go backwards,
// kept sending to a webhook being disabled, and could disable it twice.
func TestReloadKeepsUnrecordedOutcomes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fastConfig())
	repo := &gatedRecords{Webhooks: sqlstore.NewWebhooks(e.db), gate: make(chan struct{})}
	eng, err := NewEngineWithRepository(repo, e.db, e.log, fastConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	// Two failures, then 410 Gone: disabled with a streak of three.
	rc := newReceiver(t, func(n int) int {
		if n < 3 {
			return http.StatusInternalServerError
		}
		return http.StatusGone
	})
	hook := createHook(t, eng, "t", rc.srv.URL)
	run(t, eng)
	var open sync.Once
	release := func() { open.Do(func() { close(repo.gate) }) }
	t.Cleanup(release) // before the engine stops: its writer waits on the gate
	// One sandbox's events go one at a time (order.go), so the attempts
	// are 500, 500 (the first event's retry) and 410 in that order; three
	// sandboxes' would race, and a retry answered 410 after the disable
	// made the streak four.
	for range 3 {
		if err := e.log.Append(t.Context(), &events.Event{Type: events.SandboxCreated, TeamID: "t", SandboxID: "sb"}); err != nil {
			t.Fatal(err)
		}
	}
	memory := func() Webhook {
		eng.mu.Lock()
		defer eng.mu.Unlock()
		return *eng.hooks[hook.ID]
	}
	waitFor(t, "disabled in memory", func() bool { return !memory().Enabled })
	before := memory()
	if before.ConsecutiveFailures != 3 {
		t.Fatalf("streak %d in memory, want 3", before.ConsecutiveFailures)
	}
	eng.reloadHooks(t.Context())
	if after := memory(); after.Enabled || after.ConsecutiveFailures != 3 || !after.FailingSince.Equal(before.FailingSince) ||
		after.DisabledReason != before.DisabledReason {
		t.Fatalf("after a reload with outcomes unrecorded: enabled=%v failures=%d reason=%q; want disabled, 3 failures, %q",
			after.Enabled, after.ConsecutiveFailures, after.DisabledReason, before.DisabledReason)
	}
	release()
	waitFor(t, "the disable recorded", func() bool {
		w, err := repo.Webhook(t.Context(), "t", hook.ID)
		return err == nil && !w.Enabled
	})
	w, _ := repo.Webhook(t.Context(), "t", hook.ID)
	if w.ConsecutiveFailures != 3 {
		t.Errorf("recorded streak %d, want 3", w.ConsecutiveFailures)
	}
	evs, _ := e.log.List(t.Context(), events.Filter{TeamID: "t", Types: []string{events.WebhookDisabled}})
	if len(evs) != 1 {
		t.Errorf("%d webhook.disabled events, want 1", len(evs))
	}
}

// TestCancelledPingForgetsItsWaiter: a test ping whose caller gave up
// (here: no engine runs to send it) leaves no waiter behind.
func TestCancelledPingForgetsItsWaiter(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fastConfig())
	hook := createHook(t, e.eng, "t", "http://127.0.0.1:9/")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := e.eng.Test(ctx, "t", hook.ID); err == nil {
		t.Fatal("a test ping nobody sent succeeded")
	}
	e.eng.mu.Lock()
	n := len(e.eng.waiters)
	e.eng.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d waiters left after the caller gave up, want 0", n)
	}
}

// TestRedeliverAfterUnrecordedFinalOutcome: a redelivery asked for while
// the delivery's final failure still awaits its record is not undone by
// that record: it goes, and its own outcome is what the log shows.
func TestRedeliverAfterUnrecordedFinalOutcome(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fastConfig())
	repo := &gatedRecords{Webhooks: sqlstore.NewWebhooks(e.db), gate: make(chan struct{})}
	eng, err := NewEngineWithRepository(repo, e.db, e.log, fastConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	// 410 Gone: failed at once, no retry. Then 200 for the redelivery.
	rc := newReceiver(t, func(n int) int {
		if n == 1 {
			return http.StatusGone
		}
		return http.StatusOK
	})
	hook := createHook(t, eng, "t", rc.srv.URL)
	run(t, eng)
	var open sync.Once
	release := func() { open.Do(func() { close(repo.gate) }) }
	t.Cleanup(release)
	if err := e.log.Append(t.Context(), &events.Event{Type: events.SandboxCreated, TeamID: "t", SandboxID: "sb"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first attempt", func() bool { return len(rc.all()) == 1 })
	var did string
	if err := e.db.QueryRowContext(t.Context(), `SELECT id FROM webhook_deliveries WHERE webhook_id = ?`, hook.ID).Scan(&did); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the failure finished in memory", func() bool {
		eng.mu.Lock()
		defer eng.mu.Unlock()
		_, done := eng.done[did]
		return done
	})
	redone := make(chan error, 1)
	go func() {
		_, err := eng.Redeliver(t.Context(), "t", hook.ID, did)
		redone <- err
	}()
	// The redelivery may wait for the records queued before it; let it
	// run ahead if it does not, so the late record comes after it.
	select {
	case err := <-redone:
		redone <- err
	case <-time.After(200 * time.Millisecond):
	}
	release()
	if err := <-redone; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the redelivery sent", func() bool { return len(rc.all()) == 2 })
	waitFor(t, "the redelivery recorded", func() bool {
		var state string
		var attempts int
		err := e.db.QueryRowContext(t.Context(), `SELECT state, (SELECT COUNT(*) FROM webhook_attempts a WHERE a.delivery_id = d.id)
			FROM webhook_deliveries d WHERE id = ?`, did).Scan(&state, &attempts)
		return err == nil && state == stateSuccess && attempts == 2
	})
}
