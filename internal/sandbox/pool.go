package sandbox

import (
	"context"
	"errors"
	goruntime "runtime"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/telemetry"
	"github.com/sbxdev/sbx/internal/template"
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

// AnyTemplate is the key of StartPools' sizes that applies to every
// template without a size of its own: such a template gets a pool the first
// time a sandbox is created from it, sized by demand (a minimum of 0 lets it
// shrink away when unused).
const AnyTemplate = "*"

// StartPools keeps warm pools for the given templates until ctx ends. Each
// pool waits for its template to be ready first.
func (m *Manager) StartPools(ctx context.Context, sizes map[string]PoolSize) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pools == nil {
		m.pools = map[string]*pool{}
	}
	m.poolCtx = ctx
	for ref, size := range sizes {
		switch {
		case ref == AnyTemplate:
			m.autoPool = size
		case size.Max <= 0 && size.Min <= 0:
			// "base=0:0" turns the pool off; without this the auto pool
			// would start one at the first create.
			if m.poolOff == nil {
				m.poolOff = map[string]bool{}
			}
			m.poolOff[ref] = true
		default:
			m.startPoolLocked(ref, size)
		}
	}
}

func (m *Manager) startPoolLocked(ref string, size PoolSize) *pool {
	if size.Max <= 0 {
		return nil
	}
	p := newPool(size)
	m.pools[ref] = p
	m.poolWG.Add(1)
	go func() {
		defer m.poolWG.Done()
		m.fillLoop(m.poolCtx, ref, p)
	}()
	return p
}

// poolFor returns the pool of a template, starting one on first use when
// pools for any template are enabled and this one's is not turned off.
func (m *Manager) poolFor(tpl template.Template) *pool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p := m.pools[tpl.ID]; p != nil || m.poolCtx == nil || m.poolCtx.Err() != nil {
		return p
	}
	if m.poolOff[tpl.ID] {
		return nil
	}
	for _, name := range tpl.Names {
		if m.poolOff[name] {
			return nil
		}
	}
	return m.startPoolLocked(tpl.ID, m.autoPool)
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

func (m *Manager) fillLoop(ctx context.Context, ref string, p *pool) {
	tpl, err := m.templates.Resolve(ctx, ref)
	if err != nil {
		m.log.Warn("no warm pool: template unavailable", "template.id", ref, "err", err)
		return
	}
	p.mu.Lock()
	p.buildID = tpl.BuildID
	p.mu.Unlock()
	m.mu.Lock()
	m.pools[tpl.ID] = p // claims look pools up by template ID
	m.mu.Unlock()
	m.poolStarted(tpl)
	var starts sync.WaitGroup
	defer starts.Wait()
	for {
		step, wait := p.next(m.now(), int(m.coldStarts.Load()))
		switch step {
		case stepShrink:
			select {
			case l := <-p.ready:
				m.destroy(ctx, l.sb.ID)
			default:
			}
			continue
		case stepStart:
			// A rebuilt template: drop sandboxes of the old build, fill
			// with the new one. Running sandboxes keep their build.
			cur, err := m.templates.Resolve(ctx, ref)
			if errors.Is(err, errdefs.ErrNotFound) {
				m.log.Info("template deleted; removing its warm pool", "template.id", tpl.ID)
				m.mu.Lock()
				delete(m.pools, tpl.ID)
				delete(m.pools, ref)
				m.mu.Unlock()
				starts.Wait()
				m.drain(ctx, p)
				return
			}
			if err == nil && cur.BuildID != tpl.BuildID {
				tpl = cur
				p.mu.Lock()
				p.buildID = tpl.BuildID
				p.mu.Unlock()
				m.drain(ctx, p)
			}
			p.mu.Lock()
			p.inflight++
			p.mu.Unlock()
			starts.Add(1)
			go func(tpl template.Template) {
				defer starts.Done()
				m.refillOne(ctx, p, tpl)
			}(tpl)
			continue
		}
		var after <-chan time.Time
		switch step {
		case stepWait:
			after = time.After(wait)
		default: // demand decays: re-evaluate the target now and then
			after = time.After(5 * time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		case <-after:
		}
	}
}

// refillOne starts one sandbox of tpl for p and makes it ready, unless the
// pool moved to another build or stopped meanwhile.
func (m *Manager) refillOne(ctx context.Context, p *pool, tpl template.Template) {
	defer p.kick()
	l, err := m.prestart(ctx, tpl)
	p.startDone(m.now(), err != nil)
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("warm pool refill failed; retrying", "template.id", tpl.ID, "err", err)
		}
		return
	}
	p.mu.Lock()
	current := p.buildID == tpl.BuildID
	p.mu.Unlock()
	if current && ctx.Err() == nil {
		select {
		case p.ready <- l:
			return
		default: // full: demand fell while it started
		}
	}
	m.destroy(context.WithoutCancel(ctx), l.sb.ID)
}

// prestart starts a sandbox for the pool: no team, no token, no env vars yet.
func (m *Manager) prestart(ctx context.Context, tpl template.Template) (*live, error) {
	id, err := newID()
	if err != nil {
		return nil, err
	}
	sb := store.Sandbox{ID: id, TemplateID: tpl.ID, BuildID: tpl.BuildID, Alias: firstName(tpl),
		State: store.StateRunning, CPUCount: tpl.CPUCount, MemoryMB: tpl.MemoryMB, DiskMB: tpl.DiskMB,
		AllowInternet: true, Runtime: m.driver.Name(), NodeID: m.cfg.NodeID}
	return m.start(ctx, &sb, tpl)
}

// claim hands out a pooled sandbox for sb (filled in by Create), or nil when
// none is ready. It sends /init with the caller's env vars and token.
func (m *Manager) claim(ctx context.Context, tpl template.Template, sb *store.Sandbox) *live {
	if !sb.AllowInternet {
		return nil // pooled sandboxes have outbound access; a restricted one starts cold
	}
	p := m.poolFor(tpl)
	if p == nil {
		return nil
	}
	p.mu.Lock()
	current := p.buildID == tpl.BuildID
	p.mu.Unlock()
	p.noteClaim(m.now())
	ctx, span := telemetry.Start(ctx, "sandbox.pool_claim")
	l := m.claimFrom(ctx, p, tpl, sb, current)
	span.SetAttributes(attribute.Bool("pool.hit", l != nil))
	span.End()
	m.obs().PoolClaim(tpl, l != nil)
	return l
}

// claimFrom takes a ready sandbox of tpl from p and hands it to sb, or
// returns nil when p has none (of the template's current build).
func (m *Manager) claimFrom(ctx context.Context, p *pool, tpl template.Template, sb *store.Sandbox, current bool) *live {
	for current {
		l := p.take(ctx)
		if l == nil {
			return nil
		}
		if l.snapshot != m.launchFor(tpl).snapshot {
			// Pooled before the template's snapshot existed (or after it
			// went): every sandbox of a build must start the same way.
			m.log.DebugContext(ctx, "pooled sandbox started otherwise than the template now starts; discarding it", "sandbox.id", l.sb.ID)
			m.destroy(context.WithoutCancel(ctx), l.sb.ID)
			continue
		}
		sb.ID, sb.NetNS, sb.Runtime = l.sb.ID, l.sb.NetNS, l.sb.Runtime
		// The sandbox keeps the agent key it was created with; envd
		// writes the token file for in-sandbox services itself.
		err := l.agent.init(ctx, initRequest{EnvVars: initVars(*sb), AccessToken: sb.AccessToken,
			DefaultUser: tpl.User, DefaultWorkdir: tpl.Workdir})
		if err == nil {
			l.sb = *sb
			return l
		}
		m.log.WarnContext(ctx, "pooled sandbox unusable; discarding it", "sandbox.id", l.sb.ID, "err", err)
		m.destroy(context.WithoutCancel(ctx), l.sb.ID)
	}
	return nil
}

// take returns a ready sandbox of the pool, or nil. With none ready it
// waits up to claimWait for one the pool is starting, when no other
// create already waits for that one.
func (p *pool) take(ctx context.Context) *live {
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
	p.mu.Unlock()
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

// Close stops the pools and removes the pooled sandboxes (they belong to
// nobody). Running sandboxes keep running for the next server to reattach.
func (m *Manager) Close(ctx context.Context) {
	m.checkpointPaused(ctx) // with the disk tier on: paused ones go to disk
	m.poolWG.Wait()
	m.WaitReclaimed()
	m.mu.Lock()
	pools := m.pools
	m.pools = nil
	m.mu.Unlock()
	seen := map[*pool]bool{}
	for _, p := range pools {
		if seen[p] {
			continue
		}
		seen[p] = true
		m.drain(ctx, p)
	}
}

// drain destroys every ready sandbox of a pool.
func (m *Manager) drain(ctx context.Context, p *pool) {
	for {
		select {
		case l := <-p.ready:
			m.destroy(ctx, l.sb.ID)
		default:
			return
		}
	}
}
