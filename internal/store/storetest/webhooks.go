package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
)

// WebhooksFactory returns two repositories over one fresh, empty database,
// each with connections of its own: two servers sharing it.
type WebhooksFactory func(t *testing.T) (a, b store.Webhooks)

// RunWebhooks runs the webhooks repository's suite.
func RunWebhooks(t *testing.T, newRepos WebhooksFactory) {
	t.Run("Registrations", func(t *testing.T) { a, _ := newRepos(t); testHookCRUD(t, a) })
	t.Run("FanOutOnce", func(t *testing.T) { testFanOutOnce(t, newRepos) })
	t.Run("Leases", func(t *testing.T) { testLeases(t, newRepos) })
	t.Run("ConcurrentClaims", func(t *testing.T) { testConcurrentClaims(t, newRepos) })
	t.Run("Records", func(t *testing.T) { testRecords(t, newRepos) })
	t.Run("LostLeaseRecords", func(t *testing.T) { testLostLeaseRecords(t, newRepos) })
	t.Run("DeliveryLog", func(t *testing.T) { a, _ := newRepos(t); testDeliveryLog(t, a) })
}

var hookT0 = time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)

func newHook(t *testing.T, r store.Webhooks, team, name string, startSeq int64) store.Webhook {
	t.Helper()
	w := store.Webhook{ID: team + "-" + name, TeamID: team, Name: name, URL: "https://example.com/" + name,
		Secret: "s3cret", Events: []string{"sandbox.lifecycle.created"}, Enabled: true, CreatedAt: hookT0, UpdatedAt: hookT0}
	if err := r.CreateWebhook(t.Context(), &w, 3, func(context.Context) (int64, error) { return startSeq, nil }); err != nil {
		t.Fatalf("CreateWebhook %s: %v", w.ID, err)
	}
	return w
}

func testHookCRUD(t *testing.T, r store.Webhooks) {
	ctx := t.Context()
	if err := r.InitWebhookCursor(ctx, 0); err != nil {
		t.Fatal(err)
	}
	a := newHook(t, r, "t1", "a", 7)
	newHook(t, r, "t1", "b", 7)
	newHook(t, r, "t1", "c", 7)
	extra := store.Webhook{ID: "t1-d", TeamID: "t1", Name: "d", Events: []string{"x"}, CreatedAt: hookT0, UpdatedAt: hookT0}
	if err := r.CreateWebhook(ctx, &extra, 3, func(context.Context) (int64, error) { return 0, nil }); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("fourth webhook of a team limited to 3: %v, want ErrResourceExhausted", err)
	}
	got, err := r.Webhook(ctx, "t1", a.ID)
	if err != nil || got.StartSeq != 7 || got.Secret != "s3cret" || len(got.Events) != 1 || !got.Enabled || !got.CreatedAt.Equal(hookT0) {
		t.Fatalf("Webhook = %+v, %v; want what was created, StartSeq 7", got, err)
	}
	if _, err := r.Webhook(ctx, "t2", a.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("another team's webhook: %v, want ErrNotFound", err)
	}
	list, err := r.ListWebhooks(ctx, "t1")
	if err != nil || len(list) != 3 || list[0].ID != a.ID {
		t.Fatalf("ListWebhooks(t1) = %d, %v", len(list), err)
	}
	until := hookT0.Add(time.Hour)
	up, err := r.UpdateWebhook(ctx, "t1", a.ID, func(w *store.Webhook) error {
		w.URL, w.Enabled, w.DisabledReason, w.PrevSecret, w.PrevSecretUntil = "https://example.org/", false, "by request", w.Secret, until
		w.Secret, w.ConsecutiveFailures, w.FailingSince = "new", 4, hookT0
		return nil
	})
	if err != nil || up.URL != "https://example.org/" {
		t.Fatalf("UpdateWebhook = %+v, %v", up, err)
	}
	got, _ = r.Webhook(ctx, "t1", a.ID)
	if got.Enabled || got.DisabledReason != "by request" || got.Secret != "new" || got.PrevSecret != "s3cret" ||
		!got.PrevSecretUntil.Equal(until) || got.ConsecutiveFailures != 4 || !got.FailingSince.Equal(hookT0) {
		t.Fatalf("after update: %+v", got)
	}
	if _, err := r.UpdateWebhook(ctx, "t1", a.ID, func(w *store.Webhook) error {
		w.Name = "lost"
		return errors.New("refused")
	}); err == nil {
		t.Fatal("an update whose change fails succeeded")
	}
	if got, _ := r.Webhook(ctx, "t1", a.ID); got.Name != "a" {
		t.Fatalf("a failed update was stored: name %q", got.Name)
	}
	found := false
	if err := r.DeleteWebhook(ctx, "t2", a.ID, func() { found = true }); !errors.Is(err, errdefs.ErrNotFound) || found {
		t.Fatalf("deleting another team's webhook: %v (found %v), want ErrNotFound", err, found)
	}
	if err := r.DeleteWebhook(ctx, "t1", a.ID, func() { found = true }); err != nil || !found {
		t.Fatalf("DeleteWebhook: %v (found %v)", err, found)
	}
	if list, _ := r.ListWebhooks(ctx, ""); len(list) != 2 {
		t.Fatalf("after delete %d webhooks, want 2", len(list))
	}
}

// fanOut adds one delivery per (hook, seq) for seqs, and moves the cursor
// to the last.
func fanOut(t *testing.T, r store.Webhooks, hooks []string, seqs ...int64) (int64, bool) {
	t.Helper()
	cursor, ran, err := r.FanOut(t.Context(), "", func(_ context.Context, _ *sqldb.Tx, cursor int64, _ []store.Webhook) ([]store.NewDelivery, int64, error) {
		var ds []store.NewDelivery
		for _, s := range seqs {
			for _, h := range hooks {
				ds = append(ds, store.NewDelivery{ID: fmt.Sprintf("%s-%d-%d", h, s, time.Now().UnixNano()), WebhookID: h, TeamID: "t1",
					EventID: fmt.Sprint("ev", s), EventSeq: s, EventType: "sandbox.lifecycle.created", SandboxID: fmt.Sprint("sb", s), Body: []byte(`{}`), MaxAttempts: 3, Due: hookT0})
			}
		}
		return ds, max(cursor, seqs[len(seqs)-1]), nil
	})
	if err != nil {
		t.Fatalf("FanOut: %v", err)
	}
	return cursor, ran
}

func pending(t *testing.T, r store.Webhooks, hooks ...string) []store.PendingDelivery {
	t.Helper()
	ds, _, err := r.PendingDeliveries(t.Context(), hooks, nil, -1)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// testFanOutOnce: each (webhook, event) delivery exists once however often
// it is fanned out, and a failed fan-out stores nothing.
func testFanOutOnce(t *testing.T, newRepos WebhooksFactory) {
	a, b := newRepos(t)
	ctx := t.Context()
	if err := a.InitWebhookCursor(ctx, 0); err != nil {
		t.Fatal(err)
	}
	h := newHook(t, a, "t1", "a", 0).ID
	if cursor, ran := fanOut(t, a, []string{h}, 1, 2, 3); !ran || cursor != 0 {
		t.Fatalf("first fan-out: cursor %d, ran %v", cursor, ran)
	}
	// The same events again, from both servers at once.
	var wg sync.WaitGroup
	for _, r := range []store.Webhooks{a, b} {
		wg.Go(func() { fanOut(t, r, []string{h}, 2, 3, 4) })
	}
	wg.Wait()
	ds := pending(t, a, h)
	seen := map[int64]int{}
	for _, d := range ds {
		seen[d.EventSeq]++
		if d.SandboxID != fmt.Sprint("sb", d.EventSeq) {
			// The engine orders a sandbox's deliveries by it.
			t.Fatalf("delivery of event %d read back with sandbox %q", d.EventSeq, d.SandboxID)
		}
	}
	if len(ds) != 4 || seen[1] != 1 || seen[2] != 1 || seen[3] != 1 || seen[4] != 1 {
		t.Fatalf("deliveries by event: %v, want each of 1..4 once", seen)
	}
	if seq, _, _ := a.WebhookCursor(ctx); seq != 4 {
		t.Fatalf("cursor %d, want 4", seq)
	}
	_, _, err := a.FanOut(ctx, "", func(context.Context, *sqldb.Tx, int64, []store.Webhook) ([]store.NewDelivery, int64, error) {
		return []store.NewDelivery{{ID: "lost", WebhookID: h, EventSeq: 9, Body: []byte(`{}`), Due: hookT0}}, 9, errors.New("boom")
	})
	if err == nil {
		t.Fatal("a failing fan-out succeeded")
	}
	if seq, _, _ := a.WebhookCursor(ctx); seq != 4 || len(pending(t, a, h)) != 4 {
		t.Fatalf("a failed fan-out moved the cursor to %d or stored deliveries", seq)
	}
}

// testLeases: a queue with deliveries is leased by one server process at a
// time, taken over when the lease runs out, taken back at once by its
// node's restarted process, and a lease's loser cannot record outcomes.
func testLeases(t *testing.T, newRepos WebhooksFactory) {
	a, b := newRepos(t)
	ctx := t.Context()
	_ = a.InitWebhookCursor(ctx, 0)
	h := newHook(t, a, "t1", "a", 0).ID
	now := hookT0
	if got, err := a.ClaimWebhookQueues(ctx, "node-a", "boot1", now, now.Add(time.Minute)); err != nil || len(got) != 0 {
		t.Fatalf("claim with nothing to send: %v, %v", got, err)
	}
	fanOut(t, a, []string{h}, 1)
	claim := func(r store.Webhooks, node, boot string, at time.Time) []string {
		t.Helper()
		got, err := r.ClaimWebhookQueues(ctx, node, boot, at, at.Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := claim(a, "node-a", "boot1", now); len(got) != 1 || got[0] != h {
		t.Fatalf("node-a claims %v, want [%s]", got, h)
	}
	if got := claim(b, "node-b", "boot1", now.Add(30*time.Second)); len(got) != 0 {
		t.Fatalf("node-b took a live lease: %v", got)
	}
	// node-a restarts (a new boot): it takes its queue back at once.
	if got := claim(a, "node-a", "boot2", now.Add(30*time.Second)); len(got) != 1 {
		t.Fatalf("restarted node-a claims %v", got)
	}
	d := pending(t, a, h)[0]
	rec := store.AttemptRecord{ID: "att-old", DeliveryID: d.ID, WebhookID: h, Attempt: 1, OK: true, URL: "u",
		RequestHeaders: "{}", ResponseStatus: 200, At: now, State: store.DeliverySuccess}
	// boot1 lost the lease: its outcome does not count (its attempt is logged).
	if err := a.RecordAttempts(ctx, "node-a", "boot1", []store.AttemptRecord{rec}, nil); err != nil {
		t.Fatal(err)
	}
	if len(pending(t, a, h)) != 1 {
		t.Fatal("a server that lost the lease recorded an outcome")
	}
	// The lease runs out: node-b takes the queue and its record counts.
	later := now.Add(2 * time.Minute)
	if got := claim(b, "node-b", "boot1", later); len(got) != 1 {
		t.Fatalf("node-b after the lease ran out claims %v", got)
	}
	rec.ID = "att-new"
	if err := b.RecordAttempts(ctx, "node-b", "boot1", []store.AttemptRecord{rec}, nil); err != nil {
		t.Fatal(err)
	}
	if len(pending(t, a, h)) != 0 {
		t.Fatal("the lease holder's outcome was not recorded")
	}
	// Nothing left to send: no queue to claim; a release frees the lease.
	if got := claim(b, "node-b", "boot1", later); len(got) != 0 {
		t.Fatalf("claimed an empty queue: %v", got)
	}
	if err := b.ReleaseWebhookQueues(ctx, "node-b", "boot1"); err != nil {
		t.Fatal(err)
	}
	fanOut(t, a, []string{h}, 2)
	if got := claim(a, "node-a", "boot3", later); len(got) != 1 {
		t.Fatalf("after release node-a claims %v", got)
	}
}

// testConcurrentClaims: servers claiming at once share the queues out,
// never holding one together.
func testConcurrentClaims(t *testing.T, newRepos WebhooksFactory) {
	a, b := newRepos(t)
	ctx := t.Context()
	_ = a.InitWebhookCursor(ctx, 0)
	var hooks []string
	for i := range 3 {
		for _, team := range []string{"t1", "t2", "t3", "t4"} {
			hooks = append(hooks, newHook(t, a, team, fmt.Sprint("h", i), 0).ID)
		}
	}
	fanOut(t, a, hooks, 1, 2)
	for round := range 5 {
		at := hookT0.Add(time.Duration(round) * time.Hour) // every lease from before ran out
		got := make([][]string, 2)
		var wg sync.WaitGroup
		for i, r := range []store.Webhooks{a, b} {
			wg.Go(func() {
				var err error
				if got[i], err = r.ClaimWebhookQueues(ctx, fmt.Sprint("node", i), "boot", at, at.Add(time.Minute)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		owner := map[string]int{}
		for i, ids := range got {
			for _, id := range ids {
				if _, dup := owner[id]; dup {
					t.Fatalf("round %d: both servers hold queue %s", round, id)
				}
				owner[id] = i
			}
		}
		if len(owner) != len(hooks) {
			t.Fatalf("round %d: %d of %d queues claimed", round, len(owner), len(hooks))
		}
	}
}

// testRecords: outcomes, failure counters and auto-disable commit together
// with what the disable callback writes, or not at all; a redelivery and
// the sweep.
func testRecords(t *testing.T, newRepos WebhooksFactory) {
	a, _ := newRepos(t)
	ctx := t.Context()
	_ = a.InitWebhookCursor(ctx, 0)
	h := newHook(t, a, "t1", "a", 0).ID
	fanOut(t, a, []string{h}, 1, 2)
	if _, err := a.ClaimWebhookQueues(ctx, "n", "b", hookT0, hookT0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	ds := pending(t, a, h)
	fail := func(id, att string, n int) store.AttemptRecord {
		return store.AttemptRecord{ID: att, DeliveryID: id, WebhookID: h, Attempt: n, DurationMs: 1.5, URL: "u", RequestHeaders: `{"a":"b"}`,
			ResponseStatus: 500, ErrorClass: "http_error", ErrorMessage: "500", At: hookT0.Add(time.Duration(n) * time.Second),
			State: store.DeliveryPending, NextAttemptAt: hookT0.Add(time.Hour)}
	}
	r1 := fail(ds[0].ID, "att1", 1)
	r1.Counters = &store.Webhook{ConsecutiveFailures: 1, FailingSince: hookT0}
	r1.Disable = "410"
	err := a.RecordAttempts(ctx, "n", "b", []store.AttemptRecord{r1}, func(context.Context, *sqldb.Tx, int) error {
		return errors.New("event log down")
	})
	if err == nil {
		t.Fatal("a record whose disable callback failed succeeded")
	}
	if w, _ := a.Webhook(ctx, "t1", h); !w.Enabled || w.ConsecutiveFailures != 0 {
		t.Fatalf("a failed record changed the webhook: %+v", w)
	}
	called := -1
	if err := a.RecordAttempts(ctx, "n", "b", []store.AttemptRecord{r1}, func(_ context.Context, tx *sqldb.Tx, i int) error {
		called = i
		return nil
	}); err != nil || called != 0 {
		t.Fatalf("RecordAttempts: %v (callback for %d)", err, called)
	}
	if w, _ := a.Webhook(ctx, "t1", h); w.Enabled || w.DisabledReason != "410" || w.ConsecutiveFailures != 1 || !w.FailingSince.Equal(hookT0) {
		t.Fatalf("after a disabling record: %+v", w)
	}
	// A disabled webhook's queue is not claimed, unless a user forces a redelivery.
	if got, _ := a.ClaimWebhookQueues(ctx, "n", "b", hookT0, hookT0.Add(time.Minute)); len(got) != 0 {
		t.Fatalf("claimed a disabled webhook's queue: %v", got)
	}
	if _, err := a.Redeliver(ctx, h, "no-such", hookT0); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("redeliver unknown: %v", err)
	}
	d, err := a.Redeliver(ctx, h, "att1", hookT0.Add(time.Minute)) // by an attempt's id
	if err != nil || d.ID != ds[0].ID || d.Attempts != 1 || !d.Forced {
		t.Fatalf("Redeliver = %+v, %v", d, err)
	}
	if got, _ := a.ClaimWebhookQueues(ctx, "n", "b", hookT0, hookT0.Add(time.Minute)); len(got) != 1 {
		t.Fatalf("a forced redelivery's queue was not claimed: %v", got)
	}
	// Test pings belong to no queue: recorded without a lease.
	if err := a.InsertTestDelivery(ctx, store.NewDelivery{ID: "ping", WebhookID: h, TeamID: "t1", EventID: "e",
		EventType: "webhook.test", Body: []byte(`{"ping":1}`), MaxAttempts: 1, Due: hookT0}); err != nil {
		t.Fatal(err)
	}
	if body, err := a.DeliveryBody(ctx, "ping"); err != nil || string(body) != `{"ping":1}` {
		t.Fatalf("DeliveryBody = %q, %v", body, err)
	}
	if _, err := a.DeliveryBody(ctx, "gone"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("DeliveryBody(unknown): %v", err)
	}
	ok := store.AttemptRecord{ID: "att-ping", DeliveryID: "ping", WebhookID: h, Attempt: 1, OK: true, URL: "u",
		RequestHeaders: "{}", ResponseStatus: 204, At: hookT0, State: store.DeliverySuccess}
	gone := ok
	gone.ID, gone.DeliveryID = "att-gone", "deleted-delivery"
	if err := a.RecordAttempts(ctx, "other", "boot", []store.AttemptRecord{ok, gone}, nil); err != nil {
		t.Fatal(err)
	}
	logs, err := a.DeliveryLogs(ctx, "t1", h, store.DeliveryFilter{Statuses: []string{store.DeliverySuccess}})
	if err != nil || len(logs) != 1 || logs[0].ID != "ping" || len(logs[0].Attempts) != 1 || logs[0].Attempts[0].ResponseStatus != 204 {
		t.Fatalf("successful deliveries: %+v, %v; want the ping with its attempt", logs, err)
	}
	// The sweep takes finished deliveries older than the cutoff and their
	// attempts, never pending ones.
	n, err := a.SweepDeliveries(ctx, time.Now().Add(time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("SweepDeliveries = %d, %v; want the ping", n, err)
	}
	if logs, _ := a.DeliveryLogs(ctx, "t1", h, store.DeliveryFilter{}); len(logs) != 2 {
		t.Fatalf("after the sweep %d deliveries, want the 2 pending", len(logs))
	}
}

// testLostLeaseRecords: a server that lost a queue's lease (its records
// arrive late) changes nothing of the webhook: neither the counters the
// new holder keeps nor its enabled state, and no disable event is written.
func testLostLeaseRecords(t *testing.T, newRepos WebhooksFactory) {
	a, b := newRepos(t)
	ctx := t.Context()
	_ = a.InitWebhookCursor(ctx, 0)
	h := newHook(t, a, "t1", "a", 0).ID
	fanOut(t, a, []string{h}, 1, 2)
	if _, err := b.ClaimWebhookQueues(ctx, "new", "b2", hookT0, hookT0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	ds := pending(t, a, h)
	stale := store.AttemptRecord{ID: "att-old", DeliveryID: ds[0].ID, WebhookID: h, Attempt: 1, URL: "u", RequestHeaders: "{}",
		ResponseStatus: 410, ErrorClass: "http_error", ErrorMessage: "410", At: hookT0, State: store.DeliveryFailed,
		Counters: &store.Webhook{ConsecutiveFailures: 99, FailingSince: hookT0}, Disable: "410 from the old holder"}
	called := false
	if err := a.RecordAttempts(ctx, "old", "b1", []store.AttemptRecord{stale}, func(context.Context, *sqldb.Tx, int) error {
		called = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	w, _ := a.Webhook(ctx, "t1", h)
	if !w.Enabled || w.DisabledReason != "" || w.ConsecutiveFailures != 0 || !w.FailingSince.IsZero() || called {
		t.Fatalf("a record by a server without the lease changed the webhook: enabled=%v reason=%q failures=%d since=%v, disable callback %v",
			w.Enabled, w.DisabledReason, w.ConsecutiveFailures, w.FailingSince, called)
	}
	if got := pending(t, a, h); len(got) != 2 {
		t.Fatalf("%d deliveries pending after a lost lease's record, want 2", len(got))
	}
	// The holder's own record of the same outcome counts.
	stale.ID = "att-new"
	if err := b.RecordAttempts(ctx, "new", "b2", []store.AttemptRecord{stale}, func(context.Context, *sqldb.Tx, int) error {
		called = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if w, _ := a.Webhook(ctx, "t1", h); w.Enabled || w.ConsecutiveFailures != 99 || !called {
		t.Fatalf("the holder's record did not count: %+v, disable callback %v", w, called)
	}
}

// testDeliveryLog: paging both ways, filters, attempts in order, stats.
func testDeliveryLog(t *testing.T, r store.Webhooks) {
	ctx := t.Context()
	_ = r.InitWebhookCursor(ctx, 0)
	h := newHook(t, r, "t1", "a", 0).ID
	fanOut(t, r, []string{h}, 1, 2, 3, 4, 5)
	if _, err := r.ClaimWebhookQueues(ctx, "n", "b", hookT0, hookT0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	var recs []store.AttemptRecord
	for i, d := range pending(t, r, h) {
		ok := d.EventSeq%2 == 1
		st, class := store.DeliverySuccess, ""
		if !ok {
			st, class = store.DeliveryFailed, "timeout"
		}
		recs = append(recs, store.AttemptRecord{ID: fmt.Sprint("att", i), DeliveryID: d.ID, WebhookID: h, Attempt: 1, OK: ok,
			DurationMs: float64(10 * (i + 1)), URL: "u", RequestHeaders: "{}", ErrorClass: class, ErrorMessage: class,
			At: hookT0.Add(time.Duration(i) * time.Minute), State: st})
	}
	if err := r.RecordAttempts(ctx, "n", "b", recs, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := r.DeliveryLogs(ctx, "t2", h, store.DeliveryFilter{}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("another team's log: %v", err)
	}
	var seqs []string
	var after int64
	for {
		page, err := r.DeliveryLogs(ctx, "t1", h, store.DeliveryFilter{Limit: 2, AfterRID: after, Ascending: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, d := range page {
			seqs = append(seqs, d.EventID)
			if len(d.Attempts) != 1 || d.Attempts[0].DeliveryID != d.ID {
				t.Fatalf("delivery %s attempts %+v", d.ID, d.Attempts)
			}
		}
		after = page[len(page)-1].RID
	}
	if fmt.Sprint(seqs) != "[ev1 ev2 ev3 ev4 ev5]" {
		t.Fatalf("oldest first in pages of 2: %v", seqs)
	}
	newest, _ := r.DeliveryLogs(ctx, "t1", h, store.DeliveryFilter{Limit: 1})
	failed, _ := r.DeliveryLogs(ctx, "t1", h, store.DeliveryFilter{Statuses: []string{store.DeliveryFailed}})
	if len(newest) != 1 || newest[0].EventID != "ev5" || len(failed) != 2 || failed[0].Attempts[0].ErrorClass != "timeout" {
		t.Fatalf("newest %+v, failed %d", newest, len(failed))
	}
	st, err := r.AttemptStats(ctx, "t1", h, hookT0, hookT0.Add(10*time.Minute), 10)
	if err != nil || st.Total != 5 || st.Failed != 2 || st.MinMs != 10 || st.MaxMs != 50 || st.AvgMs != 30 || len(st.Buckets) != 5 {
		t.Fatalf("AttemptStats = %+v, %v", st, err)
	}
	for _, b := range st.Buckets {
		if b.Total != 1 || b.AvgMs != float64(10*(b.Index+1)) {
			t.Fatalf("bucket %+v", b)
		}
	}
}
