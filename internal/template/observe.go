package template

import (
	"sync"
	"time"
)

// BuildObserver is told when builds start and end, for metrics
// (internal/metrics). name is the template's canonical name.
type BuildObserver interface {
	BuildStarted(teamID, name string)
	BuildFinished(teamID, name string, ok bool, d time.Duration)
}

// SetBuildObserver installs o; call it before builds start.
func (s *Service) SetBuildObserver(o BuildObserver) { s.observer.o = o }

// buildObserver times builds from their started event to their succeeded
// or failed one: the events every build emits once each.
type buildObserver struct {
	o       BuildObserver
	mu      sync.Mutex
	started map[string]time.Time // by build ID
}

func (bo *buildObserver) event(typ string, rec Record, b BuildRecord, now time.Time) {
	if bo.o == nil {
		return
	}
	name := rec.ID
	if len(rec.Names) > 0 {
		name = rec.Names[0]
	}
	bo.mu.Lock()
	defer bo.mu.Unlock()
	switch typ {
	case EventBuildStarted:
		if bo.started == nil {
			bo.started = map[string]time.Time{}
		}
		bo.started[b.ID] = now
		bo.o.BuildStarted(rec.TeamID, name)
	case EventBuildSucceeded, EventBuildFailed:
		t0, ok := bo.started[b.ID]
		if !ok {
			return // started before this process: its duration is unknown
		}
		delete(bo.started, b.ID)
		bo.o.BuildFinished(rec.TeamID, name, typ == EventBuildSucceeded, now.Sub(t0))
	}
}
