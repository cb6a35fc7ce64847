package webhook

import (
	"container/heap"
	"time"
)

// item is one pending delivery held in memory. The database row is the
// durable copy; memory only decides what to send next.
type item struct {
	id          string
	webhookID   string
	seq         int64  // event sequence number: the order within a webhook
	sandbox     string // the event's sandbox: its deliveries go one at a time (order.go)
	attempts    int
	maxAttempts int
	due         time.Time
	body        []byte // nil: load from the database when sent
	force       bool   // test pings and manual redeliveries go even to disabled webhooks
	where       int    // inWaiting, inReady, inFlight, inHeld or inDone
	index       int    // position in its heap
}

const (
	inWaiting = iota
	inReady
	inFlight
	inHeld // behind an earlier delivery of its sandbox (order.go)
	inDone // finished; its sandbox's next waits for the record
)

// readyHeap orders a webhook's due deliveries by event sequence, so a
// healthy endpoint receives events in the order they happened.
type readyHeap []*item

func (h readyHeap) Len() int { return len(h) }
func (h readyHeap) Less(i, j int) bool {
	if h[i].seq != h[j].seq {
		return h[i].seq < h[j].seq
	}
	return h[i].id < h[j].id
}
func (h readyHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *readyHeap) Push(x any)   { it := x.(*item); it.index = len(*h); *h = append(*h, it) }
func (h *readyHeap) Pop() any     { old := *h; it := old[len(old)-1]; *h = old[:len(old)-1]; return it }
func (h readyHeap) peek() *item   { return h[0] }
func (h *readyHeap) take() *item  { return heap.Pop(h).(*item) }
func (h *readyHeap) put(it *item) { it.where = inReady; heap.Push(h, it) }

// waitHeap orders deliveries waiting for a retry by due time.
type waitHeap []*item

func (h waitHeap) Len() int           { return len(h) }
func (h waitHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h waitHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *waitHeap) Push(x any)        { it := x.(*item); it.index = len(*h); *h = append(*h, it) }
func (h *waitHeap) Pop() any          { old := *h; it := old[len(old)-1]; *h = old[:len(old)-1]; return it }
func (h *waitHeap) put(it *item)      { it.where = inWaiting; heap.Push(h, it) }

// lane is one webhook's queue. Up to a share of Config.PerWebhook of its
// deliveries are in flight at once; they start in event order, one at a
// time per sandbox (order.go), and deliveries of different sandboxes may
// finish in any order.
type lane struct {
	ready      readyHeap
	sandboxes  map[string]*sandboxQueue // by sandbox id: its pending deliveries, in event order
	inflight   int                      // attempts started and not yet completed
	unrecorded int                      // finished attempts whose outcome is not committed yet
	disabling  int                      // of those, outcomes that disable the webhook
}

// RecordLag is how many finished attempts of a webhook may await their
// record while its next attempt goes. It trades throughput against what a
// kill -9 can make the next holder of the queue send again. Each outcome
// is a database write: with a lag of 1 (a send overlapping the previous
// record) one webhook went at one database round trip per delivery: about
// 1,000/s on PostgreSQL. With 16 the writer records a backlog in batches
// (one statement for up to 16 outcomes) while the sends go on, and a
// kill -9 repeats at most RecordLag+PerWebhook deliveries per webhook:
// those awaiting their record and those in flight. Receivers dedupe on webhook-id
// (Standard Webhooks' at-least-once); a webhook that is not behind has
// nothing awaiting a record, so this only counts under a backlog.
const RecordLag = 16

// start takes it, the lane's next delivery, to send.
func (l *lane) start(it *item) {
	l.ready.take()
	it.where = inFlight
	l.inflight++
}

// stop ends an attempt started by start; false if none was in flight.
func (l *lane) stop() bool {
	if l.inflight == 0 {
		return false
	}
	l.inflight--
	return true
}

// free reports whether the lane may start another attempt with share of
// them in flight at most.
func (l *lane) free(share int) bool { return l.inflight < share && l.unrecorded <= RecordLag }

// active reports whether the lane competes for workers: it has deliveries
// due or in flight.
func (l *lane) active() bool { return l.inflight > 0 || len(l.ready) > 0 }

// gone reports whether the lane holds nothing and may be forgotten.
func (l *lane) gone() bool {
	return l.inflight == 0 && l.unrecorded == 0 && len(l.ready) == 0 && len(l.sandboxes) == 0
}

func heapFix(h *waitHeap, i int) { heap.Fix(h, i) }
