package sandbox

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/telemetry"
	"github.com/sbxdev/sbx/internal/template"
)

// AnyTemplate is the key of StartPools' sizes that applies to every
// template without a size of its own: such a template gets a pool the first
// time a sandbox is created from it, sized by demand (a minimum of 0 lets it
// shrink away when unused).
const AnyTemplate = "*"

// poolHost is what the pools need of the manager: a sandbox started as a
// create would start it (no team yet), its teardown, and how the template
// starts now (a pooled sandbox started otherwise is stale).
type poolHost interface {
	// prestart starts sandbox id of tpl, in the background (at the least
	// CPU weight) if asked; foreground raises it to the normal weight.
	prestart(ctx context.Context, tpl template.Template, id string, background bool) (*live, error)
	foreground(ctx context.Context, id string) error
	destroy(ctx context.Context, id string)
	launchFor(tpl template.Template) launch
}

// warmPools is what the manager asks of its pools (Pools).
type warmPools interface {
	// start keeps the configured pools until ctx ends.
	start(ctx context.Context, sizes map[string]PoolSize)
	// claim hands out a ready sandbox of tpl for sb, /init sent, or nil.
	claim(ctx context.Context, tpl template.Template, sb *store.Sandbox) *live
	// coldStart notes a create starting a sandbox of its own until done.
	coldStart() (done func())
	// refresh replaces tpl's pooled sandboxes (its snapshot changed).
	refresh(ctx context.Context, tplID string)
	// stop waits for the fill loops (after start's ctx ended); drainAll
	// then removes every pooled sandbox.
	stop()
	drainAll(ctx context.Context)
	// readyCounts returns how many pooled sandboxes are ready, per
	// template ID (the node's heartbeat reports them for placement).
	readyCounts() map[string]int
}

// Pools keeps a node's warm pools: per template, sandboxes started ahead
// of time that creates claim (pool.go decides when each one fills). It
// starts and removes sandboxes through the manager (poolHost).
type Pools struct {
	host      poolHost
	templates Templates
	log       *slog.Logger
	observer  Observer
	now       func() time.Time

	mu    sync.Mutex
	pools map[string]*pool // by template ID (and the ref it was configured by)
	// ctx bounds every pool's fill loop; auto sizes the pools of
	// templates that got none explicitly (AnyTemplate).
	ctx  context.Context
	auto PoolSize
	// off holds the templates (by ID or name) configured with a maximum
	// of 0: neither a pool of their own nor the auto pool.
	off map[string]bool
	wg  sync.WaitGroup
	// coldStarts counts creates starting a sandbox of their own (no
	// pooled one): pools grow above their minimum only while it is 0.
	coldStarts atomic.Int32
}

var _ warmPools = (*Pools)(nil)

func newPools(host poolHost, tpl Templates, log *slog.Logger, o Observer, now func() time.Time) *Pools {
	return &Pools{host: host, templates: tpl, log: log, observer: o, now: now, pools: map[string]*pool{}}
}

func (ps *Pools) start(ctx context.Context, sizes map[string]PoolSize) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.ctx = ctx
	for ref, size := range sizes {
		switch {
		case ref == AnyTemplate:
			ps.auto = size
		case size.Max <= 0 && size.Min <= 0:
			// "base=0:0" turns the pool off; without this the auto pool
			// would start one at the first create.
			if ps.off == nil {
				ps.off = map[string]bool{}
			}
			ps.off[ref] = true
		default:
			ps.startLocked(ref, size)
		}
	}
}

func (ps *Pools) startLocked(ref string, size PoolSize) *pool {
	if size.Max <= 0 {
		return nil
	}
	p := newPool(size)
	ps.pools[ref] = p
	ps.wg.Add(1)
	go func() {
		defer ps.wg.Done()
		ps.fillLoop(ps.ctx, ref, p)
	}()
	return p
}

// poolFor returns the pool of a template, starting one on first use when
// pools for any template are enabled and this one's is not turned off.
func (ps *Pools) poolFor(tpl template.Template) *pool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if p := ps.pools[tpl.ID]; p != nil || ps.ctx == nil || ps.ctx.Err() != nil {
		return p
	}
	if ps.off[tpl.ID] {
		return nil
	}
	for _, name := range tpl.Names {
		if ps.off[name] {
			return nil
		}
	}
	return ps.startLocked(tpl.ID, ps.auto)
}

func (ps *Pools) coldStart() (done func()) {
	ps.coldStarts.Add(1)
	return func() { ps.coldStarts.Add(-1) }
}

func (ps *Pools) fillLoop(ctx context.Context, ref string, p *pool) {
	tpl, err := ps.templates.Resolve(ctx, ref)
	if err != nil {
		ps.log.Warn("no warm pool: template unavailable", "template.id", ref, "err", err)
		return
	}
	p.mu.Lock()
	p.tplID, p.buildID = tpl.ID, tpl.BuildID
	p.mu.Unlock()
	ps.mu.Lock()
	ps.pools[tpl.ID] = p // claims look pools up by template ID
	ps.mu.Unlock()
	ps.observer.PoolStarted(tpl)
	var starts sync.WaitGroup
	defer starts.Wait()
	for {
		step, wait := p.next(ps.now(), int(ps.coldStarts.Load()))
		switch step {
		case stepShrink:
			select {
			case l := <-p.ready:
				ps.host.destroy(ctx, l.sb.ID)
			default:
			}
			continue
		case stepStart:
			// A rebuilt template: drop sandboxes of the old build, fill
			// with the new one. Running sandboxes keep their build.
			cur, err := ps.templates.Resolve(ctx, ref)
			if errors.Is(err, errdefs.ErrNotFound) {
				ps.log.Info("template deleted; removing its warm pool", "template.id", tpl.ID)
				ps.mu.Lock()
				delete(ps.pools, tpl.ID)
				delete(ps.pools, ref)
				ps.mu.Unlock()
				starts.Wait()
				ps.drain(ctx, p)
				return
			}
			if err == nil && cur.BuildID != tpl.BuildID {
				tpl = cur
				p.mu.Lock()
				p.buildID = tpl.BuildID
				p.mu.Unlock()
				ps.drain(ctx, p)
			}
			p.mu.Lock()
			p.inflight++
			p.mu.Unlock()
			starts.Add(1)
			go func(tpl template.Template) {
				defer starts.Done()
				ps.refillOne(ctx, p, tpl)
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
func (ps *Pools) refillOne(ctx context.Context, p *pool, tpl template.Template) {
	defer p.kick()
	id, err := newID()
	var l *live
	if err == nil {
		bg := p.bgStart(id)
		l, err = ps.host.prestart(ctx, tpl, id, bg)
		if bg && p.bgDone(id) && err == nil {
			_ = ps.host.foreground(ctx, id) // claimFrom raises it again if this failed
		}
		if l != nil {
			l.background = bg
		}
	}
	p.startDone(ps.now(), err != nil)
	if err != nil {
		if ctx.Err() == nil {
			ps.log.Warn("warm pool refill failed; retrying", "template.id", tpl.ID, "err", err)
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
	ps.host.destroy(context.WithoutCancel(ctx), l.sb.ID)
}

// claim hands out a pooled sandbox for sb (filled in by Create), or nil when
// none is ready. It sends /init with the caller's env vars and token.
func (ps *Pools) claim(ctx context.Context, tpl template.Template, sb *store.Sandbox) *live {
	if !sb.AllowInternet {
		return nil // pooled sandboxes have outbound access; a restricted one starts cold
	}
	p := ps.poolFor(tpl)
	if p == nil {
		return nil
	}
	p.mu.Lock()
	current := p.buildID == tpl.BuildID
	p.mu.Unlock()
	p.noteClaim(ps.now())
	ctx, span := telemetry.Start(ctx, "sandbox.pool_claim")
	l := ps.claimFrom(ctx, p, tpl, sb, current)
	span.SetAttributes(attribute.Bool("pool.hit", l != nil))
	span.End()
	ps.observer.PoolClaim(tpl, l != nil)
	return l
}

// claimFrom takes a ready sandbox of tpl from p and hands it to sb, or
// returns nil when p has none (of the template's current build).
func (ps *Pools) claimFrom(ctx context.Context, p *pool, tpl template.Template, sb *store.Sandbox, current bool) *live {
	for current {
		l := p.take(ctx, func(id string) { _ = ps.host.foreground(ctx, id) })
		if l == nil {
			return nil
		}
		if l.background { // a user waits for it now
			if err := ps.host.foreground(ctx, l.sb.ID); err != nil {
				// Left at the least weight, it would lose the CPU to every
				// refill for as long as it runs: not one to hand a user.
				ps.host.destroy(context.WithoutCancel(ctx), l.sb.ID)
				continue
			}
			l.background = false
		}
		if l.snapshot != ps.host.launchFor(tpl).snapshot {
			// Pooled before the template's snapshot existed (or after it
			// went): every sandbox of a build must start the same way.
			ps.log.DebugContext(ctx, "pooled sandbox started otherwise than the template now starts; discarding it", "sandbox.id", l.sb.ID)
			ps.host.destroy(context.WithoutCancel(ctx), l.sb.ID)
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
		ps.log.WarnContext(ctx, "pooled sandbox unusable; discarding it", "sandbox.id", l.sb.ID, "err", err)
		ps.host.destroy(context.WithoutCancel(ctx), l.sb.ID)
	}
	return nil
}

func (ps *Pools) refresh(ctx context.Context, tplID string) {
	ps.mu.Lock()
	p := ps.pools[tplID]
	ps.mu.Unlock()
	if p != nil {
		ps.drain(ctx, p)
		p.kick()
	}
}

func (ps *Pools) stop() { ps.wg.Wait() }

// readyCounts counts each pool once (a pool configured by name is also
// keyed by its template ID). A count is a moment's: a claim or a refill
// may change it at once, which placement allows for (a miss starts cold).
func (ps *Pools) readyCounts() map[string]int {
	ps.mu.Lock()
	seen := make(map[*pool]bool, len(ps.pools))
	for _, p := range ps.pools {
		seen[p] = true
	}
	ps.mu.Unlock()
	out := make(map[string]int, len(seen))
	for p := range seen {
		p.mu.Lock()
		id := p.tplID
		p.mu.Unlock()
		if n := len(p.ready); id != "" && n > 0 {
			out[id] += n
		}
	}
	return out
}

// PooledReady returns how many pooled sandboxes are ready, per template
// ID.
func (m *Manager) PooledReady() map[string]int { return m.pools.readyCounts() }

func (ps *Pools) drainAll(ctx context.Context) {
	ps.mu.Lock()
	pools := ps.pools
	ps.pools = nil
	ps.mu.Unlock()
	seen := map[*pool]bool{}
	for _, p := range pools {
		if seen[p] {
			continue
		}
		seen[p] = true
		ps.drain(ctx, p)
	}
}

// drain destroys every ready sandbox of a pool.
func (ps *Pools) drain(ctx context.Context, p *pool) {
	for {
		select {
		case l := <-p.ready:
			ps.host.destroy(ctx, l.sb.ID)
		default:
			return
		}
	}
}

// StartPools keeps warm pools for the given templates until ctx ends. Each
// pool waits for its template to be ready first. ctx also bounds the
// manager's background work (template snapshots it retakes).
func (m *Manager) StartPools(ctx context.Context, sizes map[string]PoolSize) {
	m.tplSnaps.serve(ctx)
	m.pools.start(ctx, sizes)
}

// prestart starts a sandbox for the pool: no team, no token, no env vars yet.
func (m *Manager) prestart(ctx context.Context, tpl template.Template, id string, background bool) (*live, error) {
	sb := store.Sandbox{ID: id, TemplateID: tpl.ID, BuildID: tpl.BuildID, Alias: firstName(tpl),
		State: store.StateRunning, CPUCount: tpl.CPUCount, MemoryMB: tpl.MemoryMB, DiskMB: tpl.DiskMB,
		AllowInternet: true, Runtime: m.driver.Name(), NodeID: m.cfg.NodeID}
	how := m.launchFor(tpl)
	how.background = background
	return m.startWith(ctx, &sb, tpl, how)
}

// foreground gives a pooled sandbox started in the background the normal
// CPU weight (a create waits for it, or has claimed it).
func (m *Manager) foreground(ctx context.Context, id string) error {
	err := m.rt.foreground(ctx, id)
	if err != nil && !errors.Is(err, runtime.ErrNotFound) {
		m.log.WarnContext(ctx, "raise a pooled sandbox's CPU weight", "sandbox.id", id, "err", err)
	}
	return err
}

// Close stops the pools and removes the pooled sandboxes (they belong to
// nobody). Running sandboxes keep running for the next server to reattach.
// Call it after the ctx given to StartPools ended.
func (m *Manager) Close(ctx context.Context) {
	m.disk.checkpointPaused(ctx) // with the disk tier on: paused ones go to disk
	m.pools.stop()
	m.tplSnaps.wg.Wait()
	m.WaitReclaimed()
	m.pools.drainAll(ctx)
}
