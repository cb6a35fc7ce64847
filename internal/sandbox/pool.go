package sandbox

import (
	"context"
	goruntime "runtime"
	"sync"
	"time"
)

// Warm pools: each pooled template keeps sandboxes started ahead of time
// (container running, agent ready, start command running) so a create only
// has to claim one and send /init with the caller's env vars and token.
// A pooled sandbox belongs to no team and is not in the store until claimed,
// so lists, events and budgets see it only from then; it is never reused
// after a kill. Pooled sandboxes left by a crash are removed by Recover as
// orphans (they are not in the store).

// PoolSize bounds the warm pool of one template.
type PoolSize struct {
	Min int // always kept ready
	Max int // upper bound when demand is high
}

// demandWindow is how far back claims count towards the pool's target.
const demandWindow = 30 * time.Second

// refillConcurrency bounds the sandboxes one pool starts at once: one CPU
// is left to the creates and commands users wait for (measured on a busy
// 2-core host, two refills at once slowed pooled claims and first commands
// more than they sped up the refill), the others may each run a start.
// Pooled sandboxes cannot start at a lower priority: their processes would
// keep it.
var refillConcurrency = min(4, max(1, goruntime.NumCPU()-1))

// refillQuiet is how often a pool above its minimum looks again whether
// cold creates still run: growing it then would take CPU from them (a burst
// of concurrent creates); once they are done it grows at full speed.
const refillQuiet = 20 * time.Millisecond

// claimWait bounds how long a create that finds the pool empty waits for a
// sandbox the pool is already starting before it starts one of its own.
// The pool's start began earlier, so it is ready sooner than a new one, and
// not starting a second saves that start's CPU for the refill. It is well
// above a start's time even on a loaded host: with 250 ms, a tight loop on
// a busy 2-core machine (starts of 150-300 ms) had a few creates wait the
// whole 250 ms and then start cold (create p95 575 ms against 219 ms).
const claimWait = time.Second

type pool struct {
	size    PoolSize
	ready   chan *live
	wake    chan struct{}
	mu      sync.Mutex
	tplID   string // the template it pools, once resolved
	buildID string
	claims  []time.Time
	// inflight counts the pool's starts in progress; waiting, the creates
	// waiting for one of them (never more than inflight, so a burst does
	// not queue behind two starts). retryAt holds refills off after a
	// failed start.
	inflight int
	waiting  int
	retryAt  time.Time
	backoff  time.Duration
	// starting holds the IDs of the starts in progress that began in the
	// background (bgStart), true once a create waits for them.
	starting map[string]bool
}

func newPool(size PoolSize) *pool {
	if size.Max < size.Min {
		size.Max = size.Min
	}
	return &pool{size: size, ready: make(chan *live, size.Max), wake: make(chan struct{}, 1)}
}

// target is the number of ready sandboxes wanted now: the minimum, raised
// by the number of claims in the recent window, capped by the maximum.
func (p *pool) target(now time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	cut := 0
	for cut < len(p.claims) && now.Sub(p.claims[cut]) > demandWindow {
		cut++
	}
	p.claims = p.claims[cut:]
	return max(p.size.Min, min(p.size.Max, len(p.claims)))
}

func (p *pool) noteClaim(now time.Time) {
	p.mu.Lock()
	p.claims = append(p.claims, now)
	p.mu.Unlock()
	p.kick()
}

// kick makes the fill loop look at the pool now.
func (p *pool) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// refillStep is what a pool's fill loop does next (pool.next).
type refillStep int

const (
	stepIdle   refillStep = iota // full, or starting all it may: wait for a claim or a start to end
	stepStart                    // start one more sandbox
	stepShrink                   // demand fell: remove a ready sandbox
	stepWait                     // look again after the returned delay
)

// next decides a fill loop's next step. coldStarts is the number of
// creates starting sandboxes of their own right now (not from a pool).
// Below its minimum a pool refills at once, up to refillConcurrency
// sandboxes at a time; above it, it grows towards demand only while no
// cold create runs, so it never slows the creates of a burst it could not
// serve.
func (p *pool) next(now time.Time, coldStarts int) (refillStep, time.Duration) {
	target := p.target(now)
	p.mu.Lock()
	defer p.mu.Unlock()
	ready := len(p.ready)
	switch {
	case ready > target:
		return stepShrink, 0
	case ready+p.inflight >= target, p.inflight >= refillConcurrency:
		return stepIdle, 0
	case now.Before(p.retryAt):
		return stepWait, p.retryAt.Sub(now)
	case ready+p.inflight >= p.size.Min && coldStarts > 0:
		return stepWait, refillQuiet
	}
	return stepStart, 0
}

// startDone records the end of one of the pool's starts.
func (p *pool) startDone(now time.Time, failed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inflight--
	if !failed {
		p.backoff = 0
		return
	}
	p.backoff = min(max(2*p.backoff, time.Second), time.Minute)
	p.retryAt = now.Add(p.backoff)
}

// bgStart says whether the start of sandbox id begins in the background
// (runtime.Resources.Background): while the pool holds a ready sandbox,
// the next create takes that one, so nobody waits for this start and the
// creates and commands users wait for should win the CPU from it. With
// none ready, a create may soon wait for it: it starts at normal weight.
// A background start is tracked until startDone so a create that ends up
// waiting for it can raise it (take).
func (p *pool) bgStart(id string) bool {
	if len(p.ready) == 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.starting == nil {
		p.starting = map[string]bool{}
	}
	p.starting[id] = false
	return true
}

// bgDone forgets a background start and says whether a create waited for
// it meanwhile (it must be raised now: the raise may have come before its
// cgroup existed).
func (p *pool) bgDone(id string) (raised bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	raised = p.starting[id]
	delete(p.starting, id)
	return raised
}

// take returns a ready sandbox of the pool, or nil. With none ready it
// waits up to claimWait for one the pool is starting, when no other
// create already waits for that one; starts in progress that began in the
// background are raised to the foreground first (raise, once each).
func (p *pool) take(ctx context.Context, raise func(id string)) *live {
	select {
	case l := <-p.ready:
		return l
	default:
	}
	p.mu.Lock()
	if p.waiting >= p.inflight {
		p.mu.Unlock()
		return nil
	}
	p.waiting++
	var bg []string
	for id, raised := range p.starting {
		if !raised {
			p.starting[id] = true
			bg = append(bg, id)
		}
	}
	p.mu.Unlock()
	for _, id := range bg {
		raise(id)
	}
	defer func() {
		p.mu.Lock()
		p.waiting--
		p.mu.Unlock()
	}()
	t := time.NewTimer(claimWait)
	defer t.Stop()
	select {
	case l := <-p.ready:
		return l
	case <-t.C:
	case <-ctx.Done():
	}
	return nil
}
