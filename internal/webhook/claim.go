package webhook

import (
	"context"
	"time"
)

// DeliveriesChannel is the notification channel on which the server that
// fanned events out announces the new deliveries to the others, so the
// holder of each webhook's queue loads them at once.
const DeliveriesChannel = "sbx_webhook_deliveries"

// Queues and leases. Several servers may share the database; each
// webhook's deliveries form one queue, and one server at a time holds a
// lease on it (webhooks.lease_node/lease_boot/lease_until), taken with
// FOR UPDATE SKIP LOCKED so servers claiming together never wait on each
// other or take the same queue. The holder sends the queue's deliveries,
// up to its share of Config.PerWebhook at once, and renews the lease every
// second while deliveries are pending. A delivery's outcome is recorded only while the
// lease is still its sender's, and a sender stops starting attempts once
// less than one delivery timeout of its lease is left: so each delivery is
// sent by one server, and when that server dies (kill -9 included) its
// lease runs out and another takes the queue over, retries and all. The
// only repeats are the attempts the dead server had sent (several at once)
// but not yet recorded.
// A restarted server (same node name) takes its own leases back at once.

// claimLoop claims and renews queues, and loads their pending deliveries,
// whenever deliveries may have appeared and at least every renewal period.
func (e *Engine) claimLoop(ctx context.Context) {
	tick := time.NewTicker(e.cfg.renewEvery())
	defer tick.Stop()
	// The first round loads every queue it gets; then a full reload once a
	// minute picks up what memory lost (an outcome that could not be
	// recorded leaves its row pending).
	full := true
	lastFull := time.Now()
	for {
		if e.fullLoad.Swap(false) || time.Since(lastFull) > time.Minute {
			full = true
		}
		if err := e.claim(ctx, full); err != nil {
			if ctx.Err() != nil {
				return
			}
			e.log.Warn("claim webhook queues", "err", err)
		} else if full {
			full, lastFull = false, time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-e.claimWake:
		case <-tick.C:
		}
	}
}

// wakeClaim asks the claim loop for a round soon; full asks it to reload
// every queue it holds (a redelivery or a re-enabled webhook changed rows
// it already had).
func (e *Engine) wakeClaim(full bool) {
	if full {
		e.fullLoad.Store(true)
	}
	select {
	case e.claimWake <- struct{}{}:
	default:
	}
}

// claim renews this server's leases on queues with pending deliveries,
// takes free ones (and its own from before a restart), and loads the
// pending deliveries it does not hold in memory yet.
func (e *Engine) claim(ctx context.Context, full bool) error {
	now := e.cfg.Now()
	until := now.Add(e.cfg.Lease)
	held, err := e.repo.ClaimWebhookQueues(ctx, e.cfg.Node, e.boot, now, until)
	if err != nil {
		return err
	}

	e.mu.Lock()
	var fresh, all []string
	owned := make(map[string]time.Time, len(held))
	for _, id := range held {
		if _, had := e.owned[id]; !had || full {
			fresh = append(fresh, id)
			e.loading[id] = true
		}
		owned[id] = until
		all = append(all, id)
	}
	for id := range e.owned {
		if _, still := owned[id]; !still {
			e.log.Debug("webhook queue released", "webhook.id", id)
		}
	}
	e.owned = owned
	since := e.loadedSeq
	e.mu.Unlock()
	if len(all) == 0 {
		return nil
	}
	err = e.load(ctx, fresh, all, since)
	e.mu.Lock()
	for _, id := range fresh {
		delete(e.loading, id)
		if err != nil {
			delete(e.owned, id) // load it afresh next round
		}
	}
	e.mu.Unlock()
	e.signal()
	return err
}

// load reads, in one snapshot, every pending delivery of the fresh queues
// and the deliveries of all held queues for events after since (what
// fan-outs since the last load added), and queues those not in memory.
func (e *Engine) load(ctx context.Context, fresh, all []string, since int64) error {
	ds, cursor, err := e.repo.PendingDeliveries(ctx, fresh, all, since)
	if err != nil {
		return err
	}
	items := make([]*item, len(ds))
	for i := range ds {
		d := &ds[i]
		items[i] = &item{id: d.ID, webhookID: d.WebhookID, seq: d.EventSeq, sandbox: d.SandboxID, attempts: d.Attempts, maxAttempts: d.MaxAttempts,
			due: d.Due, force: d.Forced, body: d.Body}
	}
	e.mu.Lock()
	if e.loadedSeq == since {
		e.loadedSeq = cursor
	}
	e.mu.Unlock()
	e.enqueue(items)
	return nil
}

// mayStart reports whether an attempt of it may start now: queue
// deliveries only while this server holds the queue's lease for longer
// than one attempt can take, so no other server can have taken it over
// before the attempt's outcome is recorded.
func (e *Engine) mayStart(it *item, now time.Time) bool {
	if it.seq == 0 {
		return true // a test ping, sent by the server that was asked
	}
	until, ok := e.owned[it.webhookID]
	return ok && until.Sub(now) > e.cfg.Timeout
}
