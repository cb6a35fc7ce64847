package sandbox

import (
	"context"
	"errors"
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

// refillQuiet is how long a refill waits after the last claim while the pool
// still has a ready sandbox: starting one costs tens of milliseconds of CPU,
// which would otherwise land on the next create of a burst.
const refillQuiet = 40 * time.Millisecond

type pool struct {
	size    PoolSize
	ready   chan *live
	wake    chan struct{}
	mu      sync.Mutex
	buildID string
	claims  []time.Time
	last    time.Time // last claim
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
	p.last = now
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
	backoff := time.Second
	for {
		target := p.target(m.now())
		if n := len(p.ready); n > 0 && n < target {
			p.mu.Lock()
			wait := refillQuiet - m.now().Sub(p.last)
			p.mu.Unlock()
			if wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
				continue
			}
		}
		if len(p.ready) > target {
			// Demand fell: give back what the last burst left ready.
			select {
			case l := <-p.ready:
				m.destroy(ctx, l.sb.ID)
			default:
			}
			continue
		}
		if len(p.ready) < target {
			// A rebuilt template: drop sandboxes of the old build, fill
			// with the new one. Running sandboxes keep their build.
			cur, err := m.templates.Resolve(ctx, ref)
			if errors.Is(err, errdefs.ErrNotFound) {
				m.log.Info("template deleted; removing its warm pool", "template.id", tpl.ID)
				m.mu.Lock()
				delete(m.pools, tpl.ID)
				delete(m.pools, ref)
				m.mu.Unlock()
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
			l, err := m.prestart(ctx, tpl)
			if err == nil {
				p.ready <- l
				backoff = time.Second
				continue
			}
			if ctx.Err() != nil {
				return
			}
			m.log.Warn("warm pool refill failed; retrying", "template.id", tpl.ID, "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Minute)
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		case <-time.After(5 * time.Second): // demand decays: re-evaluate the target
		}
	}
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
		var l *live
		select {
		case l = <-p.ready:
		default:
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
