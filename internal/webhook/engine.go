// Package webhook delivers sbx events to users' HTTP endpoints: a durable
// outbox in the database (SQLite, or PostgreSQL shared by several
// servers), concurrent workers, signatures in E2B's and Standard Webhooks'
// schemes, retries with backoff over more than a day, a per-attempt log,
// auto-disable, and an SSRF check at dial time.
//
// How it works: a fan-out loop (on any server; one at a time holds the
// cursor row) reads the event log after a durable cursor and, in one
// transaction, inserts one delivery row per (event, subscribed webhook) —
// unique, so never twice — and advances the cursor. Each webhook's
// deliveries form a queue leased by one server at a time (claim.go), which
// sends them from memory and writes their outcomes back in batches. A
// crash (kill -9) at any point leaves either the events before the cursor,
// whose deliveries are committed, or the events after it, which are
// fanned out again; the crashed server's queues go to the next holder with
// every pending delivery. A webhook's next delivery waits while more than
// RecordLag of its outcomes await their commit, so the only deliveries
// sent twice are those in flight and those being recorded at the crash,
// at most RecordLag+PerWebhook per webhook (receivers dedupe on webhook-id).
//
// Concurrency: up to Config.PerWebhook deliveries to one webhook are in
// flight at once (8 by default), Config.Workers over all webhooks; when
// more webhooks are busy than Workers/PerWebhook, each gets an equal share
// of the workers, so a webhook that times out holds at most its share and
// delays neither the others nor more than its share of its own queue.
//
// Order: a sandbox's events reach a webhook in the order they happened:
// its next delivery is not sent until the previous one is delivered, or
// failed for good after its retries, and that outcome is recorded
// (order.go). A delivery waiting for a retry holds back the later events
// of its sandbox only; different sandboxes deliver concurrently and
// arrive in any order. Each delivery carries its event's sequence number
// in the log (sbx-event-seq) and the body its timestamp; after a crash a
// receiver may get an event again (at-least-once), so it dedupes on
// webhook-id.
//
// Signatures: every attempt carries E2B's headers (e2b-webhook-id,
// e2b-delivery-id unique per attempt, e2b-signature-version, e2b-signature)
// and Standard Webhooks' (webhook-id stable across retries,
// webhook-timestamp signed afresh per attempt, webhook-signature); both
// come from package sdk/webhook, which receivers use to verify.
//
// Wiring (in the app package; db is sqldb.Open's, so its tables exist):
//
//	cfg := webhook.Config{AllowPrivate: flags.webhookAllowPrivate, AllowCIDRs: flags.webhookAllowCIDRs}
//	eng, err := webhook.NewEngine(db, evlog, cfg, logger.With("component", "webhook"))
//	go eng.Run(ctx)                          // returns when ctx ends, after flushing results
//	webhook.NewHandler(eng, logger).Register(mux)
package webhook

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
)

// Bus carries change notifications between the servers sharing a database
// (*sqldb.DB: LISTEN/NOTIFY on PostgreSQL, nothing to do on SQLite).
type Bus interface {
	// Listen calls fn after every notification on channel until ctx ends.
	Listen(ctx context.Context, channel string, fn func()) error
	// Notify sends a notification on channel.
	Notify(ctx context.Context, channel string) error
}

// Engine fans events out to webhooks and delivers them.
type Engine struct {
	repo   store.Webhooks
	bus    Bus
	events *events.Log
	cfg    Config
	log    *slog.Logger
	client *http.Client

	boot string // this process among the node's lives: a restart takes its own leases back

	fanMu sync.Mutex // orders this server's webhook changes with reloadHooks

	mu      sync.Mutex
	hooks   map[string]*Webhook // every webhook of every team
	lanes   map[string]*lane
	share   int // deliveries one webhook may have in flight now (Config.share)
	busy    int // deliveries in flight (or handed to a worker) over all lanes
	waiting waitHeap
	known   map[string]*item
	waiters map[string]chan *Attempt
	running bool
	// owned holds the queues (webhook ids) this server has leased, and
	// until when; loadedSeq is the fan-out cursor up to which their
	// deliveries are in memory (-1: none loaded yet).
	owned     map[string]time.Time
	loadedSeq int64
	loading   map[string]bool // queues being loaded afresh: they wait, or order could break
	// done remembers deliveries finished here until their outcome is
	// surely in the database, so a load from an older snapshot does not
	// queue them again.
	done      map[string]struct{}
	doneOrder []doneEntry

	wake      chan struct{}
	claimWake chan struct{}
	fullLoad  atomic.Bool
	work      chan *item

	// Finished attempts in the order they completed, for writeResults:
	// appended under e.mu, so a webhook's results are recorded in order
	// and its last record carries its latest counters. written counts
	// those handled (recorded or given up on); flushed signals its growth.
	resultQ       []*result
	resultWake    chan struct{}
	resultsClosed bool
	queued        uint64
	written       uint64
	flushed       *sync.Cond
}

// NewEngine prepares the engine over db (opened by sqldb.Open, so its
// tables exist): it validates cfg and loads the webhooks. Run starts
// delivering.
func NewEngine(db *sqldb.DB, evlog *events.Log, cfg Config, log *slog.Logger) (*Engine, error) {
	return NewEngineWithRepository(sqlstore.NewWebhooks(db), db, evlog, cfg, log)
}

// NewEngineWithRepository is NewEngine over a webhooks repository and the
// bus of the database it stores into.
func NewEngineWithRepository(repo store.Webhooks, bus Bus, evlog *events.Log, cfg Config, log *slog.Logger) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx := context.Background()
	e := &Engine{
		repo: repo, bus: bus, events: evlog, cfg: cfg, log: log,
		hooks: map[string]*Webhook{}, lanes: map[string]*lane{}, known: map[string]*item{},
		waiters: map[string]chan *Attempt{}, share: cfg.PerWebhook,
		boot:  uuid.NewString(),
		owned: map[string]time.Time{}, loadedSeq: -1, done: map[string]struct{}{}, loading: map[string]bool{},
		wake:       make(chan struct{}, 1),
		claimWake:  make(chan struct{}, 1),
		work:       make(chan *item, cfg.Workers),
		resultWake: make(chan struct{}, 1),
	}
	e.flushed = sync.NewCond(&e.mu)
	e.client = &http.Client{
		Transport: &http.Transport{
			Proxy:               nil, // a proxy would connect on our behalf and bypass the dial check
			DialContext:         cfg.dialer().DialContext,
			MaxIdleConnsPerHost: cfg.Workers,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: cfg.Timeout,
		},
		// A redirect is an answer other than 2xx; following it could also
		// lead to an address the dial check would have to judge again.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	hooks, err := repo.ListWebhooks(ctx, "")
	if err != nil {
		return nil, err
	}
	for i := range hooks {
		e.hooks[hooks[i].ID] = &hooks[i]
	}
	_, found, err := repo.WebhookCursor(ctx)
	if err == nil && !found {
		// First start: no webhook can exist yet, so nothing before now is owed.
		var cursor int64
		if cursor, err = evlog.LastSeq(ctx); err == nil {
			err = repo.InitWebhookCursor(ctx, cursor)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("webhook cursor: %w", err)
	}
	return e, nil
}

// Run delivers until ctx ends. On return every finished attempt is recorded;
// attempts cut short are retried by the next Run.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.running {
		e.mu.Unlock()
		return errors.New("webhook engine: already running")
	}
	e.running = true
	e.resultsClosed = false
	e.mu.Unlock()

	var workers, writer sync.WaitGroup
	writer.Go(e.writeResults)
	for range e.cfg.Workers {
		workers.Go(func() { e.worker(ctx) })
	}
	workers.Go(func() { e.fanoutLoop(ctx) })
	workers.Go(func() { e.claimLoop(ctx) })
	workers.Go(func() { e.sweepLoop(ctx) })
	workers.Go(func() {
		e.bus.Listen(ctx, HooksChannel, func() {
			e.reloadHooks(ctx)
			e.wakeClaim(true) // a redelivery or a re-enabled webhook: rows already held changed
		})
	})
	workers.Go(func() { e.bus.Listen(ctx, DeliveriesChannel, func() { e.wakeClaim(false) }) })
	e.schedule(ctx)
	workers.Wait()
	// Deliveries handed to the worker channel but not taken stay pending
	// in the database; left there, a later Run would send them besides
	// loading them afresh.
	for drained := false; !drained; {
		select {
		case <-e.work:
		default:
			drained = true
		}
	}
	e.mu.Lock()
	e.resultsClosed = true
	e.mu.Unlock()
	e.wakeWriter()
	writer.Wait()
	// Outcomes are recorded: hand the queues over at once rather than
	// when the leases run out.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	if err := e.repo.ReleaseWebhookQueues(rctx, e.cfg.Node, e.boot); err != nil {
		e.log.Warn("release webhook queues", "err", err)
	}
	cancel()
	e.mu.Lock()
	e.running = false
	// Forget in-memory state so a later Run reloads it from the database.
	e.lanes, e.known, e.waiting, e.share, e.busy = map[string]*lane{}, map[string]*item{}, nil, e.cfg.PerWebhook, 0
	e.owned, e.loadedSeq = map[string]time.Time{}, -1
	e.mu.Unlock()
	return ctx.Err()
}

func (e *Engine) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// enqueue adds new items (already stored as pending) to the queues, except
// those of queues this server does not hold (skipped reports whether there
// were any: the caller should have them claimed).
func (e *Engine) enqueue(items []*item) (skipped bool) {
	if len(items) == 0 {
		return false
	}
	e.mu.Lock()
	e.forgetDone()
	for _, it := range items {
		if _, dup := e.known[it.id]; dup {
			continue
		}
		if _, dup := e.done[it.id]; dup {
			continue
		}
		if _, ok := e.owned[it.webhookID]; !ok && it.seq > 0 {
			skipped = true
			continue
		}
		if h := e.hooks[it.webhookID]; h == nil || !h.Enabled && !it.force {
			continue // parked in the database until the webhook is enabled again
		}
		e.known[it.id] = it
		if e.admitOrdered(it) {
			e.waiting.put(it)
		}
	}
	e.mu.Unlock()
	e.signal()
	return skipped
}

type doneEntry struct {
	id string
	at time.Time
}

// finished records that delivery it is done here (e.mu held); its
// sandbox's next delivery waits for the record (writeResults).
func (e *Engine) finished(it *item) {
	it.where = inDone
	delete(e.known, it.id)
	e.done[it.id] = struct{}{}
	e.doneOrder = append(e.doneOrder, doneEntry{it.id, time.Now()})
}

// forgetDone drops done entries old enough that their outcome is written
// and any load started before it has finished (e.mu held).
func (e *Engine) forgetDone() {
	cut := time.Now().Add(-time.Minute)
	i := 0
	for i < len(e.doneOrder) && e.doneOrder[i].at.Before(cut) {
		delete(e.done, e.doneOrder[i].id)
		i++
	}
	if i > 0 {
		e.doneOrder = append(e.doneOrder[:0], e.doneOrder[i:]...)
	}
}

func (e *Engine) laneOf(id string) *lane {
	ln := e.lanes[id]
	if ln == nil {
		ln = &lane{}
		e.lanes[id] = ln
	}
	return ln
}

// schedule moves due deliveries to their webhook's lane and hands each idle
// lane's oldest delivery to a worker, until ctx ends.
func (e *Engine) schedule(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := e.dispatch()
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-e.wake:
		case <-timer.C:
		}
	}
}

func (e *Engine) dispatch() (next time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.cfg.Now()
	e.promoteDue(now)
	active := 0
	for _, ln := range e.lanes {
		if ln.active() {
			active++
		}
	}
	e.share = e.cfg.share(active)
	for id, ln := range e.lanes {
		for {
			it := e.sendable(id, ln, now)
			if it == nil {
				break
			}
			select {
			case e.work <- it:
				ln.start(it)
				e.busy++
			default:
				return 50 * time.Millisecond // all workers busy; a finishing one wakes us
			}
		}
		if ln.gone() {
			delete(e.lanes, id)
		}
	}
	if len(e.waiting) > 0 {
		return max(e.waiting[0].due.Sub(now), time.Millisecond)
	}
	return time.Hour
}

// promoteDue moves the deliveries due at now to their webhook's lane (e.mu held).
func (e *Engine) promoteDue(now time.Time) {
	for len(e.waiting) > 0 && !e.waiting[0].due.After(now) {
		it := heap.Pop(&e.waiting).(*item)
		e.laneOf(it.webhookID).ready.put(it)
	}
}

// sendable returns the delivery lane id may start now, if any, dropping
// those that must not go from here (e.mu held).
func (e *Engine) sendable(id string, ln *lane, now time.Time) *item {
	if e.loading[id] {
		return nil
	}
	for e.mayTake(ln) && len(ln.ready) > 0 {
		it := ln.ready.peek()
		if it.seq > 0 && it.seq > e.loadedSeq {
			// Deliveries of earlier events may still be on their way
			// from the database (fanned out by another server): a
			// queue's deliveries start in event order.
			return nil
		}
		if h := e.hooks[id]; h == nil || !h.Enabled && !it.force || !e.mayStart(it, now) {
			// Deleted or disabled, or the queue's lease is gone or
			// nearly: the row stays pending in the database, for
			// whoever holds the queue next (this server too: then it
			// loads the queue afresh).
			ln.ready.take()
			delete(e.known, it.id)
			e.dropOrdered(it)
			if it.seq > 0 {
				delete(e.owned, id)
			}
			continue
		}
		return it
	}
	return nil
}

// mayTake reports whether lane ln may start another delivery (e.mu held):
// its first one whenever a worker is free or may be queued for one (the
// worker channel holds up to Workers: a worker handing a backlog back
// after RecordLag deliveries finds the other webhooks' first deliveries
// waiting there), more up to its share while more than the reserve of
// workers stays free. The reserve is kept for the first delivery of other
// webhooks: a webhook that had the workers to itself and then stopped
// answering holds them until its attempts time out, and a healthy webhook
// arriving meanwhile must not wait for that.
func (e *Engine) mayTake(ln *lane) bool {
	if ln.inflight == 0 {
		return e.busy < 2*e.cfg.Workers && ln.unrecorded <= RecordLag
	}
	return e.busy < e.cfg.Workers-e.cfg.reserve() && ln.free(e.share)
}

// worker sends deliveries. After each attempt it goes on with the next
// delivery of the same webhook when it may start at once (within the
// webhook's share): a backlog then flows over kept-alive connections
// without a round through the scheduler per delivery. After RecordLag in
// a row it hands the lane back to the dispatcher, so deliveries of other
// webhooks waiting for a worker go in turn: one webhook's backlog must not
// hold up the others for as long as it lasts.
func (e *Engine) worker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case it := <-e.work:
			if !e.admit(it) {
				continue
			}
			for n := 1; it != nil; n++ {
				// A send in flight when the engine stops is finished (within
				// the delivery timeout) and its outcome recorded before the
				// queue is handed over: cut short, the receiver may already
				// have it while its row stays pending, and the next holder
				// would send it again, out of order.
				e.complete(it, e.send(context.WithoutCancel(ctx), it))
				if n >= RecordLag {
					break
				}
				it = e.next(ctx, it.webhookID)
			}
		}
	}
}

// admit checks again, as a worker takes it off e.work, that it may still
// start: it may have waited there while the webhook was disabled or
// deleted, or while the queue's lease ran out (another server may hold the
// queue now). If not, its row stays pending for the queue's next holder.
func (e *Engine) admit(it *item) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if h := e.hooks[it.webhookID]; h != nil && (h.Enabled || it.force) && e.mayStart(it, e.cfg.Now()) {
		return true
	}
	if ln := e.lanes[it.webhookID]; ln != nil {
		if ln.stop() {
			e.busy--
		}
	}
	delete(e.known, it.id)
	e.dropOrdered(it)
	if it.seq > 0 {
		delete(e.owned, it.webhookID)
	}
	e.signal()
	return false
}

// send makes one attempt of it with its webhook as this server knows it.
func (e *Engine) send(ctx context.Context, it *item) *result {
	e.mu.Lock()
	h := e.hooks[it.webhookID]
	var hook Webhook
	if h != nil {
		hook = *h
	}
	e.mu.Unlock()
	if h == nil {
		return &result{class: classCanceled}
	}
	return e.attempt(ctx, &hook, it)
}

// next takes the next delivery of webhook id's lane if it may start now.
func (e *Engine) next(ctx context.Context, id string) *item {
	if ctx.Err() != nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	ln := e.lanes[id]
	if ln == nil {
		return nil
	}
	now := e.cfg.Now()
	e.promoteDue(now)
	it := e.sendable(id, ln, now)
	if it != nil {
		ln.start(it)
		e.busy++
	}
	return it
}

// complete applies an attempt's outcome in memory and queues it for the
// database.
func (e *Engine) complete(it *item, r *result) {
	e.mu.Lock()
	ln := e.lanes[it.webhookID]
	if ln != nil {
		if ln.stop() {
			e.busy--
		}
	}
	if r.class == classCanceled {
		// Cut short by shutdown or deletion: not an attempt; the row stays
		// pending and the next Run sends it again.
		delete(e.known, it.id)
		e.dropOrdered(it)
		e.mu.Unlock()
		e.signal()
		return
	}
	now := e.cfg.Now()
	it.attempts++
	r.attempt, r.deliveryID, r.webhookID, r.force = it.attempts, it.id, it.webhookID, it.force
	if ordered(it) {
		r.sandbox = it.sandbox
	}
	h := e.hooks[it.webhookID]
	e.streak(h, it, r, now)
	if r.ok {
		r.state = stateSuccess
		e.finished(it)
	} else {
		gone := r.respStatus == http.StatusGone
		delay, more := e.cfg.retryDelay(it.attempts)
		if more && !gone && it.attempts < it.maxAttempts {
			r.state = statePending
			it.due = now.Add(delay)
			r.nextAttemptAt = it.due
			e.waiting.put(it)
		} else {
			r.state = stateFailed
			e.finished(it)
		}
	}
	if h != nil {
		r.hook = *h
		r.hookKnown = true
	}
	if ln != nil {
		// Until writeResults commits it; meanwhile a reload of the
		// webhooks keeps what it did to the webhook (putHook).
		ln.unrecorded++
		if r.disabled {
			ln.disabling++
		}
	}
	if ch := e.waiters[it.id]; ch != nil {
		delete(e.waiters, it.id)
		r.waiter = ch // answered once the attempt is in the log
	}
	e.resultQ = append(e.resultQ, r)
	e.queued++
	e.mu.Unlock()
	e.signal()
	e.wakeWriter()
}

// HooksChannel is the notification channel on which a server announces
// webhook changes to the others sharing its database.
const HooksChannel = "sbx_webhooks"

// fanoutLoop turns new events into deliveries. Any server may: the fan-out
// transaction holds the cursor row (FOR UPDATE SKIP LOCKED on PostgreSQL,
// the write lock on SQLite), so one fan-out runs at a time, and each
// (webhook, event) delivery has a unique key besides.
func (e *Engine) fanoutLoop(ctx context.Context) {
	// The event log wakes us on every commit; the slow tick only covers a
	// writer that forgot to call Notify, and events another server was
	// fanning out when we looked.
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		ch := e.events.Changed()
		n, err := e.fanout(ctx)
		if err != nil && ctx.Err() == nil {
			e.log.Error("webhook fan-out failed; retrying", "err", err)
		}
		if err == nil && n == fanoutBatch {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-tick.C:
		}
	}
}

const fanoutBatch = 1000

// noHooks reports that no webhook exists, so a fan-out would only move
// the cursor: a write transaction per event (each sandbox create, kill,
// pause...) for nothing. The cursor then stays where it is, and the
// events after it are fanned out once a webhook exists: each is after
// the StartSeq of no webhook yet. Under fanMu, a Create of this server
// is either all before the check (its webhook is in memory) or all after
// (every event already committed is at or before its StartSeq). A
// webhook another server created is fanned out by that server meanwhile,
// and by this one once reloadHooks has it.
func (e *Engine) noHooks() bool {
	e.fanMu.Lock()
	defer e.fanMu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.hooks) == 0
}

// reloadHooks replaces the webhooks in memory with the database's: another
// server sharing it created, changed or deleted some.
func (e *Engine) reloadHooks(ctx context.Context) {
	// fanMu before reading: a Create, Update or Delete of this server holds
	// it from its read to its write of the memory, so the rows read here
	// are never older than what it leaves in memory.
	e.fanMu.Lock()
	defer e.fanMu.Unlock()
	hooks, err := e.repo.ListWebhooks(ctx, "")
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn("reload webhooks", "err", err)
		}
		return
	}
	e.mu.Lock()
	fresh := make(map[string]*Webhook, len(hooks))
	for i := range hooks {
		fresh[hooks[i].ID] = e.merged(&hooks[i])
	}
	e.hooks = fresh
	e.mu.Unlock()
	e.signal()
}

// merged returns h, a webhook as read from the database, with what this
// server's outcomes still awaiting their record did to it: the database
// has them soon, and memory must not go back meanwhile (a failure streak
// restarting, sends to a webhook being disabled, a second disable). A
// user's enabling of a webhook, which resets its streak, wins over the
// streak; not over a disable awaiting its record, which lands after it
// (e.mu held).
func (e *Engine) merged(h *Webhook) *Webhook {
	old, ln := e.hooks[h.ID], e.lanes[h.ID]
	if old == nil || ln == nil || ln.unrecorded == 0 {
		return h
	}
	switch {
	case ln.disabling > 0:
		h.Enabled, h.DisabledReason, h.UpdatedAt = false, old.DisabledReason, old.UpdatedAt
		h.ConsecutiveFailures, h.FailingSince = old.ConsecutiveFailures, old.FailingSince
	case !h.Enabled || old.Enabled:
		h.ConsecutiveFailures, h.FailingSince = old.ConsecutiveFailures, old.FailingSince
	}
	return h
}

func (e *Engine) fanout(ctx context.Context) (int, error) {
	if e.noHooks() {
		return 0, nil
	}
	var items []*item
	var n int
	var last int64
	cursor, ran, err := e.repo.FanOut(ctx, DeliveriesChannel, func(ctx context.Context, tx *sqldb.Tx, cursor int64,
		hooks []store.Webhook) ([]store.NewDelivery, int64, error) {
		evs, err := e.events.AfterIn(ctx, tx, cursor, fanoutBatch, events.Filter{})
		if err != nil || len(evs) == 0 {
			return nil, cursor, err
		}
		n = len(evs)
		byTeam := map[string][]*Webhook{}
		for i := range hooks {
			byTeam[hooks[i].TeamID] = append(byTeam[hooks[i].TeamID], &hooks[i])
		}
		now := e.cfg.Now()
		maxAttempts := 1 + len(e.cfg.RetrySchedule)
		var ds []store.NewDelivery
		for i := range evs {
			ev := &evs[i]
			var body []byte
			for _, h := range byTeam[ev.TeamID] {
				if ev.Seq <= h.StartSeq || !wants(h, ev.Type) {
					continue
				}
				if body == nil {
					if body, err = json.Marshal(ev.ToJSON()); err != nil {
						return nil, 0, fmt.Errorf("fan-out: encode event %s: %w", ev.ID, err)
					}
				}
				d := store.NewDelivery{ID: uuid.NewString(), WebhookID: h.ID, TeamID: h.TeamID, EventID: ev.ID, EventSeq: ev.Seq,
					EventType: ev.Type, SandboxID: ev.SandboxID, Body: body, MaxAttempts: maxAttempts, Due: now}
				ds = append(ds, d)
				items = append(items, &item{id: d.ID, webhookID: h.ID, seq: ev.Seq, sandbox: ev.SandboxID, maxAttempts: maxAttempts,
					due: now, body: body})
			}
		}
		last = evs[len(evs)-1].Seq
		return ds, last, nil
	})
	if err != nil || !ran || n == 0 {
		return 0, err // !ran: another server is fanning out; it announces what it adds
	}
	// Queue at once what goes to queues this server holds; the others are
	// claimed (here or elsewhere) and loaded from the database.
	e.mu.Lock()
	contiguous := e.loadedSeq == cursor
	if contiguous {
		e.loadedSeq = last
	}
	e.mu.Unlock()
	if skipped := e.enqueue(items); skipped || !contiguous {
		e.wakeClaim(false) // claim those queues, or load what came between
	}
	return n, nil
}

// sweepLoop deletes finished deliveries older than the retention period,
// with their attempts, once at start and then hourly.
func (e *Engine) sweepLoop(ctx context.Context) {
	tick := time.NewTicker(time.Hour)
	defer tick.Stop()
	for {
		if n, err := e.Sweep(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("webhook log sweep failed", "err", err)
		} else if n > 0 {
			e.log.Info("webhook log swept", "deliveries", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Sweep deletes finished deliveries last updated before now − Retention,
// and their attempts, and returns how many deliveries went.
func (e *Engine) Sweep(ctx context.Context) (int64, error) {
	return e.repo.SweepDeliveries(ctx, e.cfg.Now().Add(-e.cfg.Retention))
}
