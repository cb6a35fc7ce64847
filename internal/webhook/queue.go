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
	seq         int64 // event sequence number: the order within a webhook
	attempts    int
	maxAttempts int
	due         time.Time
	body        []byte // nil: load from the database when sent
	force       bool   // test pings and manual redeliveries go even to disabled webhooks
	where       int    // inReady, inWaiting or inFlight
	index       int    // position in its heap
}

const (
	inWaiting = iota
	inReady
	inFlight
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

// lane is one webhook's queue. At most one delivery per webhook is in
// flight, which keeps deliveries in event order while the endpoint is healthy.
type lane struct {
	ready      readyHeap
	sending    bool // an attempt is in flight
	unrecorded int  // finished attempts whose outcome is not committed yet
}

// recordLag is how many finished attempts of a webhook may await their
// record while its next attempt goes: 1 overlaps a send with the previous
// record (about twice the rate of one webhook) and bounds what a kill -9
// can make the next queue holder send again to two deliveries per webhook:
// the one recording and the one in flight.
const recordLag = 1

// idle reports whether the lane may start its next attempt.
func (l *lane) idle() bool { return !l.sending && l.unrecorded <= recordLag }

// gone reports whether the lane holds nothing and may be forgotten.
func (l *lane) gone() bool { return !l.sending && l.unrecorded == 0 && len(l.ready) == 0 }

func heapFix(h *waitHeap, i int) { heap.Fix(h, i) }
