package webhook

import "container/heap"

// Per-sandbox order. Deliveries of one sandbox's events to one webhook go
// one at a time, in event order: the next is not sent until the previous
// one's outcome — delivered, or failed for good after its retries — is
// recorded in the database. Different sandboxes (and events without a
// sandbox) still go concurrently, up to the webhook's share of
// Config.PerWebhook. So a receiver never gets a sandbox's killed before
// its created, even when created is slow to answer or is being retried.
//
// Choices:
//   - A delivery waiting for a retry holds back the later events of its
//     sandbox only. When it exhausts its retries (or the webhook answers
//     410), it is failed and the later ones go, in order: one bad event
//     must not stall its sandbox for good; the delivery log shows it.
//   - The next one waits for the record, not only for the answer: a
//     server killed between the two leaves the earlier one pending, and
//     the queue's next holder would send it again after its successor.
//     That costs one batched write per event of a sandbox, not throughput
//     over sandboxes.
//   - The order is decided from the database: a webhook's queue is held by
//     one server at a time (claim.go), which loads every pending delivery
//     of it, and only the earliest pending one of each sandbox may go. A
//     restarted server, or the next holder of the queue, starts again from
//     the earliest pending delivery of each sandbox.
//   - Redeliveries a user asks for, and test pings, go at once, outside
//     this order: they are a deliberate resend of something already sent.
//   - Were an outcome impossible to record (the database failing for
//     several seconds), the successor goes anyway, and the earlier event
//     may be sent once more later: at-least-once, as before.

// sandboxQueue holds one sandbox's deliveries to one webhook in memory:
// head is the one that may go (waiting for its due time, ready, in flight,
// or finished and awaiting its record); rest are held back behind it.
type sandboxQueue struct {
	head *item
	rest seqHeap
}

// seqHeap orders held-back deliveries by event sequence.
type seqHeap []*item

func (h seqHeap) Len() int           { return len(h) }
func (h seqHeap) Less(i, j int) bool { return h[i].seq < h[j].seq }
func (h seqHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *seqHeap) Push(x any)        { it := x.(*item); it.index = len(*h); *h = append(*h, it) }
func (h *seqHeap) Pop() any          { old := *h; it := old[len(old)-1]; *h = old[:len(old)-1]; return it }

func (h *seqHeap) hold(it *item) { it.where = inHeld; heap.Push(h, it) }

// ordered reports whether it goes in its sandbox's order.
func ordered(it *item) bool { return it.sandbox != "" && it.seq > 0 && !it.force }

// admitOrdered places a new delivery in its sandbox's queue and reports
// whether it may be scheduled now: it is the sandbox's earliest, or its
// order does not apply (e.mu held). An earlier delivery arriving after a
// later one (loaded from the database after a fan-out of this server)
// takes the head back while the later one has not started.
func (e *Engine) admitOrdered(it *item) bool {
	if !ordered(it) {
		return true
	}
	ln := e.laneOf(it.webhookID)
	if ln.sandboxes == nil {
		ln.sandboxes = map[string]*sandboxQueue{}
	}
	q := ln.sandboxes[it.sandbox]
	if q == nil {
		ln.sandboxes[it.sandbox] = &sandboxQueue{head: it}
		return true
	}
	if h := q.head; it.seq < h.seq && (h.where == inWaiting || h.where == inReady) {
		if h.where == inWaiting {
			heap.Remove(&e.waiting, h.index)
		} else {
			heap.Remove(&ln.ready, h.index)
		}
		q.rest.hold(h)
		q.head = it
		return true
	}
	q.rest.hold(it)
	return false
}

// advance moves the sandbox's order past delivery id, whose final outcome
// is recorded: the next held-back delivery, if any, is scheduled (e.mu held).
func (e *Engine) advance(webhookID, sandbox, id string) {
	ln := e.lanes[webhookID]
	if ln == nil || sandbox == "" {
		return
	}
	q := ln.sandboxes[sandbox]
	if q == nil || q.head.id != id {
		return
	}
	if len(q.rest) == 0 {
		delete(ln.sandboxes, sandbox)
		return
	}
	q.head = heap.Pop(&q.rest).(*item)
	e.waiting.put(q.head)
}

// dropOrdered forgets it, which leaves memory with its row still pending
// (its webhook disabled or deleted, its queue's lease lost, or shutdown),
// and every delivery of its sandbox held back behind it: they must not go
// before it, and whoever loads the queue next loads them all again (e.mu held).
func (e *Engine) dropOrdered(it *item) {
	if !ordered(it) {
		return
	}
	ln := e.lanes[it.webhookID]
	if ln == nil {
		return
	}
	q := ln.sandboxes[it.sandbox]
	if q == nil || q.head != it {
		return
	}
	for _, r := range q.rest {
		delete(e.known, r.id)
	}
	delete(ln.sandboxes, it.sandbox)
}
