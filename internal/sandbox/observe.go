package sandbox

import (
	"slices"

	"github.com/sbxdev/sbx/internal/template"
)

// Observer is told about the warm pools, for metrics (internal/metrics).
// Its methods must be quick: they run on the create path.
type Observer interface {
	// PoolStarted: tpl has a warm pool from now on.
	PoolStarted(tpl template.Template)
	// PoolClaim: a create of tpl, which has a pool, found a ready sandbox
	// in it (hit) or started one cold (miss).
	PoolClaim(tpl template.Template, hit bool)
}

// SetObserver installs o, and tells it about the pools started so far:
// the metrics are wired after the pools start.
func (m *Manager) SetObserver(o Observer) {
	m.mu.Lock()
	m.observer.Store(&observerBox{o})
	started := slices.Clone(m.poolTemplates)
	m.mu.Unlock()
	for _, t := range started {
		o.PoolStarted(t)
	}
}

func (m *Manager) obs() Observer {
	if b := m.observer.Load(); b != nil {
		return b.Observer
	}
	return noObserver{}
}

// poolStarted records that tpl's pool is filling, and says so.
func (m *Manager) poolStarted(tpl template.Template) {
	m.mu.Lock()
	m.poolTemplates = append(m.poolTemplates, tpl)
	o := m.obs()
	m.mu.Unlock()
	o.PoolStarted(tpl)
}

type observerBox struct{ Observer }

type noObserver struct{}

func (noObserver) PoolStarted(template.Template)     {}
func (noObserver) PoolClaim(template.Template, bool) {}
