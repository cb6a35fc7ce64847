package sandbox

import (
	"time"

	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/template"
)

// Observer is told about creates and the warm pools, for metrics
// (internal/metrics). Its methods must be quick: they run on the create
// path. It is passed to New (WithObserver) so it hears of every pool from
// the first.
type Observer interface {
	// CreateDone: a Create returned sb after elapsed (err nil), or failed
	// with err.
	CreateDone(sb store.Sandbox, elapsed time.Duration, err error)
	// PoolStarted: tpl has a warm pool from now on.
	PoolStarted(tpl template.Template)
	// PoolClaim: a create of tpl, which has a pool, found a ready sandbox
	// in it (hit) or started one cold (miss).
	PoolClaim(tpl template.Template, hit bool)
}

// obs returns the observer; a Manager built as a literal (tests) has none.
func (m *Manager) obs() Observer {
	if m.observer == nil {
		return noObserver{}
	}
	return m.observer
}

type noObserver struct{}

func (noObserver) CreateDone(store.Sandbox, time.Duration, error) {}
func (noObserver) PoolStarted(template.Template)                  {}
func (noObserver) PoolClaim(template.Template, bool)              {}
