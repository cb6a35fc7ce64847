package placement

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// Config tunes a Placer. The zero value is usable.
type Config struct {
	// K is how many candidate nodes are compared per decision (power of
	// K choices). Default 2: already exponentially better balanced than
	// one random pick, and the least herding when several API replicas
	// decide from the same snapshot. K >= the node count compares all.
	K int
	// Seed seeds the sampling; 0 takes a random seed. Tests set it so
	// every decision is reproducible.
	Seed uint64
	// Now is the clock; default time.Now.
	Now func() time.Time
	// MaxReservationAge bounds how long a reservation counts when its
	// holder neither releases it nor the node reports it (a caller that
	// forgot, a create that hung): default 5 minutes.
	MaxReservationAge time.Duration
}

// sweepEvery is how often (in decisions) reservations on nodes that have
// not been looked at for that long are forgotten.
const sweepEvery = 1024

// DefaultK is the number of sampled candidates when Config.K is 0.
const DefaultK = 2

// Placer makes placement decisions. It is safe for concurrent use.
type Placer struct {
	src    NodeSource
	k      int
	now    func() time.Time
	maxAge time.Duration

	mu        sync.Mutex
	rng       *rand.Rand
	pending   map[string]*pending // node id → reservations the node has not reported yet
	decisions uint64
	tiers     [4][]int // scratch: candidate indexes per affinity, reused under mu
}

// pending is what this Placer has put on one node that the node's own
// figures may not include yet.
type pending struct {
	list     []*Reservation
	lastSeen uint64 // decision number when the node was last in a snapshot
}

// New returns a Placer reading nodes from src.
func New(src NodeSource, cfg Config) *Placer {
	p := &Placer{src: src, k: cfg.K, now: cfg.Now, maxAge: cfg.MaxReservationAge, pending: map[string]*pending{}}
	if p.k <= 0 {
		p.k = DefaultK
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.maxAge <= 0 {
		p.maxAge = 5 * time.Minute
	}
	seed := cfg.Seed
	if seed == 0 {
		var b [8]byte
		_, _ = crand.Read(b[:])
		seed = binary.LittleEndian.Uint64(b[:])
	}
	p.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return p
}

// Reservation is a decision's hold on a node: its CPU and memory (or, for
// a pooled sandbox, the pooled sandbox itself) count as taken in later
// decisions of this Placer until Release, and after Release until the node
// reports state observed after the release (by then its own figures
// include the sandbox, or it has gone).
type Reservation struct {
	p        *Placer
	node     string
	cpu, mem int64
	pooled   string // template whose pooled sandbox this claims; "" for a fresh start
	created  time.Time
	released time.Time // zero while held
}

// NodeID is the node the reservation is on.
func (r *Reservation) NodeID() string { return r.node }

// Release ends the hold: call it when the create on the node has finished,
// successfully or not. Calling it again does nothing.
func (r *Reservation) Release() {
	r.p.mu.Lock()
	defer r.p.mu.Unlock()
	if r.released.IsZero() {
		r.released = r.p.now()
	}
}

// load is what a node carries once this Placer's pending reservations on
// it are added to its own figures.
type load struct {
	cpu, mem  int64
	sandboxes int
	pooled    map[string]int // pooled sandboxes claimed, by template
}

// effective prunes the node's pending reservations that no longer count
// and sums the rest.
func (p *Placer) effective(n *Node, now time.Time) load {
	pd := p.pending[n.ID]
	if pd == nil {
		return load{}
	}
	pd.lastSeen = p.decisions
	var l load
	keep := pd.list[:0]
	for _, r := range pd.list {
		if now.Sub(r.created) > p.maxAge {
			continue // its holder is gone; the node's own figures are what counts
		}
		if !r.released.IsZero() && (n.Observed.IsZero() || !n.Observed.Before(r.released)) {
			continue // the node has reported since it was released
		}
		keep = append(keep, r)
		if r.pooled != "" {
			if l.pooled == nil {
				l.pooled = map[string]int{}
			}
			l.pooled[r.pooled]++
			continue
		}
		l.cpu += r.cpu
		l.mem += r.mem
		l.sandboxes++
	}
	clear(pd.list[len(keep):])
	pd.list = keep
	if len(keep) == 0 {
		delete(p.pending, n.ID)
	}
	return l
}

// Place chooses a node for req and reserves the request's resources on
// it. The caller releases the reservation when the create has finished;
// if the create fails on the node, it places again with the node added to
// req.Exclude. When no node can take the request, the error is a
// *NoFitError (errors.As) that says why, in the errdefs category
// ErrResourceExhausted (capacity) or ErrUnavailable (no usable node).
func (p *Placer) Place(ctx context.Context, req Request) (Decision, error) {
	if err := req.Validate(); err != nil {
		return Decision{}, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "%s", err.Error())
	}
	nodes, err := p.src.Nodes(ctx)
	if err != nil {
		return Decision{}, errdefs.Wrap(errdefs.ErrUnavailable, err, "cannot read the cluster's nodes")
	}
	if err := ctx.Err(); err != nil {
		return Decision{}, err
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	p.decisions++
	now := p.now()
	why := NoFitError{Request: req, Nodes: len(nodes)}
	for a := range p.tiers {
		p.tiers[a] = p.tiers[a][:0]
	}
	for i := range nodes {
		if a, ok := p.classify(&nodes[i], &req, now, &why); ok {
			p.tiers[a] = append(p.tiers[a], i)
		}
	}
	if p.decisions%sweepEvery == 0 {
		p.sweep()
	}

	for a := AffinityPool; a >= AffinityNone; a-- {
		cands := p.tiers[a]
		if len(cands) == 0 {
			continue
		}
		best, sampled := p.pick(nodes, cands, &req, now)
		n := &nodes[best]
		r := &Reservation{p: p, node: n.ID, cpu: req.CPUMillis, mem: req.MemoryMiB, created: now}
		if a == AffinityPool {
			r.pooled = req.TemplateID
		}
		pd := p.pending[n.ID]
		if pd == nil {
			pd = &pending{}
			p.pending[n.ID] = pd
		}
		pd.lastSeen = p.decisions
		pd.list = append(pd.list, r)
		return Decision{NodeID: n.ID, Affinity: a, Candidates: len(cands), Sampled: sampled, Reservation: r}, nil
	}
	return Decision{}, &why
}

// classify decides whether n can take req and at which affinity; when it
// cannot, it counts the first reason in why.
func (p *Placer) classify(n *Node, req *Request, now time.Time, why *NoFitError) (Affinity, bool) {
	if req.Node != "" && n.ID != req.Node {
		why.Elsewhere++
		return 0, false
	}
	if slices.Contains(req.Exclude, n.ID) {
		why.Excluded++
		return 0, false
	}
	switch n.State {
	case Ready:
	case Draining:
		why.Draining++
		return 0, false
	default: // Unhealthy, or a state this version does not know
		why.Unhealthy++
		return 0, false
	}
	_, hasSnap := n.Snapshots[req.SnapshotID]
	hasSnap = hasSnap && req.SnapshotID != ""
	if req.SnapshotID != "" && !hasSnap && !req.SnapshotInBlobStore {
		why.NoSnapshot++
		return 0, false
	}
	l := p.effective(n, now)
	// A pooled sandbox is already started and counted in the node's
	// reservations: claiming it needs no new room. It only serves fresh
	// starts; a snapshot start restores specific state.
	if req.SnapshotID == "" && !req.NoPool && req.TemplateID != "" && n.Pooled[req.TemplateID]-l.pooled[req.TemplateID] > 0 {
		return AffinityPool, true
	}
	if n.MaxSandboxes > 0 && n.Sandboxes+l.sandboxes >= n.MaxSandboxes {
		why.AtLimit++
		return 0, false
	}
	freeCPU := n.CPUMillis - n.ReservedCPUMillis - l.cpu
	freeMem := n.MemoryMiB - n.ReservedMemoryMiB - l.mem
	why.Schedulable++
	fits := true
	if freeMem < req.MemoryMiB {
		why.NoMemory++
		if why.NoMemory == 1 || freeMem > why.LargestFreeMemoryMiB {
			why.LargestFreeMemoryMiB, why.LargestFreeMemoryNode = freeMem, n.ID
		}
		fits = false
	}
	if freeCPU < req.CPUMillis {
		why.NoCPU++
		if why.NoCPU == 1 || freeCPU > why.LargestFreeCPUMillis {
			why.LargestFreeCPUMillis, why.LargestFreeCPUNode = freeCPU, n.ID
		}
		fits = false
	}
	if !fits {
		return 0, false
	}
	switch {
	case hasSnap:
		return AffinitySnapshot, true
	case req.BuildDigest != "":
		if _, ok := n.Layers[req.BuildDigest]; ok {
			return AffinityLayers, true
		}
	}
	return AffinityNone, true
}

// pick samples up to K of cands (indexes into nodes; permuted in place)
// and returns the freest, with how many were compared.
func (p *Placer) pick(nodes []Node, cands []int, req *Request, now time.Time) (int, int) {
	k := min(p.k, len(cands))
	// Partial Fisher-Yates: the first k entries become a uniform sample.
	for i := range k {
		j := i + p.rng.IntN(len(cands)-i)
		cands[i], cands[j] = cands[j], cands[i]
	}
	best, bestScore := -1, 0.0
	for _, i := range cands[:k] {
		s := p.score(&nodes[i], req, now)
		if best < 0 || s > bestScore || s == bestScore && better(&nodes[i], &nodes[best]) {
			best, bestScore = i, s
		}
	}
	return best, k
}

// score is the node's free share after taking req, on its scarcer
// resource: a node left with 60% of its CPU but 10% of its memory scores
// 0.1, so memory-heavy and CPU-heavy sandboxes spread by what binds.
func (p *Placer) score(n *Node, req *Request, now time.Time) float64 {
	l := p.effective(n, now)
	cpu := share(n.CPUMillis-n.ReservedCPUMillis-l.cpu-req.CPUMillis, n.CPUMillis)
	mem := share(n.MemoryMiB-n.ReservedMemoryMiB-l.mem-req.MemoryMiB, n.MemoryMiB)
	return min(cpu, mem)
}

func share(free, capacity int64) float64 {
	if capacity <= 0 {
		return 0
	}
	return float64(free) / float64(capacity)
}

// better breaks a score tie: fewer sandboxes, then the smaller id, so a
// seeded run is reproducible whatever the snapshot's order.
func better(a, b *Node) bool {
	if a.Sandboxes != b.Sandboxes {
		return a.Sandboxes < b.Sandboxes
	}
	return a.ID < b.ID
}

// sweep forgets reservations on nodes no decision has looked at for a
// while: nodes that left the snapshot (and ones that stayed draining or
// unhealthy all that time, which take nothing new anyway).
func (p *Placer) sweep() {
	for id, pd := range p.pending {
		if pd.lastSeen+sweepEvery < p.decisions {
			delete(p.pending, id)
		}
	}
}

// Pending reports how many reservations this Placer counts on node: for
// tests and the metrics the wiring will export.
func (p *Placer) Pending(node string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pd := p.pending[node]; pd != nil {
		return len(pd.list)
	}
	return 0
}

// String describes a decision for logs.
func (d Decision) String() string {
	return fmt.Sprintf("node %s (affinity %s, best of %d sampled from %d)", d.NodeID, d.Affinity, d.Sampled, d.Candidates)
}
