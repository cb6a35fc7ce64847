package runaway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/periodic"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
)

// Sandboxes lists live sandboxes and acts on them (the sandbox manager, or
// sbx monitor's view of E2B's sandboxes).
type Sandboxes interface {
	Live() []store.Sandbox
	KillWithReason(ctx context.Context, id, reason string) error
	PauseWithReason(ctx context.Context, id, reason string) error
}

// Stater reads cgroup counters. Without one only max-lifetime is checked.
type Stater interface {
	Stats(ctx context.Context, id string) (runtime.Stats, error)
}

// Appender records events (*events.Log).
type Appender interface {
	Append(ctx context.Context, ev *events.Event) error
}

// Detector evaluates policies against live sandboxes. Call Check
// periodically (Run does).
type Detector struct {
	policies []Policy
	sbx      Sandboxes
	stats    Stater
	ev       Appender
	log      *slog.Logger
	now      func() time.Time

	// TeamName resolves a team ID to its name so policies may name teams
	// either way. Optional.
	TeamName func(ctx context.Context, teamID string) string
	// OnAction is called after each action taken (metrics). Optional.
	OnAction func(teamID, action string)

	mu     sync.Mutex
	tracks map[string]*track
}

type track struct {
	at    time.Time
	cpu   time.Duration
	hot   map[int]time.Time // per policy: start of the run of samples ≥ CPUPercent
	idle  map[int]time.Time // per policy: start of the run of idle samples
	acted bool
	// paused: acted by pausing, so a resume starts the watch again.
	paused bool
}

// New returns a detector. stats may be nil.
func New(policies []Policy, sbx Sandboxes, stats Stater, ev Appender, log *slog.Logger) *Detector {
	return &Detector{policies: policies, sbx: sbx, stats: stats, ev: ev, log: log, now: time.Now, tracks: map[string]*track{}}
}

// SetClock replaces the clock (tests).
func (d *Detector) SetClock(now func() time.Time) { d.now = now }

// Policies returns the configured policies.
func (d *Detector) Policies() []Policy { return d.policies }

// Detection is one policy hit.
type Detection struct {
	Sandbox store.Sandbox
	Policy  Policy
	Rule    string // max-lifetime, cpu or idle
	Detail  string
}

// Check samples every live sandbox once, acts on those that break a
// policy, and returns what it found.
func (d *Detector) Check(ctx context.Context) []Detection {
	if len(d.policies) == 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now().UTC()
	live := d.sbx.Live()
	seen := make(map[string]bool, len(live))
	var found []Detection
	for _, sb := range live {
		seen[sb.ID] = true
		tr := d.tracks[sb.ID]
		if tr == nil {
			tr = &track{hot: map[int]time.Time{}, idle: map[int]time.Time{}}
			d.tracks[sb.ID] = tr
		}
		if tr.acted && tr.paused && sb.State == store.StateRunning {
			// Resumed by its owner after a runaway pause: watch it afresh
			// (max-lifetime still counts from creation).
			*tr = track{hot: map[int]time.Time{}, idle: map[int]time.Time{}}
		}
		if tr.acted {
			continue
		}
		pct, sampled := d.sample(ctx, sb, tr, now)
		var teamName string
		for i, p := range d.policies {
			if !d.applies(ctx, p, sb, &teamName) {
				continue
			}
			if det, ok := evaluate(i, p, sb, tr, now, pct, sampled); ok {
				found = append(found, det)
				if d.act(ctx, det) {
					tr.acted, tr.paused = true, p.Action == ActionPause
				}
				break
			}
		}
	}
	for id := range d.tracks {
		if !seen[id] {
			delete(d.tracks, id)
		}
	}
	return found
}

// sample returns the CPU use since the previous sample, as a percent of the
// allocated vCPUs.
func (d *Detector) sample(ctx context.Context, sb store.Sandbox, tr *track, now time.Time) (float64, bool) {
	if d.stats == nil || sb.State != store.StateRunning {
		tr.at = time.Time{} // a pause breaks the series
		return 0, false
	}
	st, err := d.stats.Stats(ctx, sb.ID)
	if err != nil {
		return 0, false
	}
	prevAt, prevCPU := tr.at, tr.cpu
	tr.at, tr.cpu = now, st.CPUUsage
	if prevAt.IsZero() || !now.After(prevAt) || st.CPUUsage < prevCPU {
		return 0, false
	}
	vcpu := float64(max(sb.CPUCount, 1))
	return 100 * float64(st.CPUUsage-prevCPU) / (float64(now.Sub(prevAt)) * vcpu), true
}

func (d *Detector) applies(ctx context.Context, p Policy, sb store.Sandbox, teamName *string) bool {
	if p.Template != "" && p.Template != sb.TemplateID && p.Template != sb.Alias {
		return false
	}
	if p.Team != "" && p.Team != sb.TeamID {
		if d.TeamName == nil {
			return false
		}
		if *teamName == "" {
			*teamName = d.TeamName(ctx, sb.TeamID)
		}
		return p.Team == *teamName
	}
	return true
}

// evaluate checks one policy. Runs of hot or idle samples start at the
// beginning of the first sampling interval that was hot (idle).
func evaluate(i int, p Policy, sb store.Sandbox, tr *track, now time.Time, pct float64, sampled bool) (Detection, bool) {
	det := Detection{Sandbox: sb, Policy: p}
	if p.MaxLifetime > 0 && !sb.StartedAt.IsZero() && now.Sub(sb.StartedAt) >= p.MaxLifetime {
		det.Rule = "max-lifetime"
		det.Detail = fmt.Sprintf("running for %s, max lifetime %s", now.Sub(sb.StartedAt).Round(time.Second), p.MaxLifetime)
		return det, true
	}
	if !sampled {
		if sb.State != store.StateRunning {
			delete(tr.hot, i)
			delete(tr.idle, i)
		}
		return det, false
	}
	if p.CPUFor > 0 {
		if pct >= p.CPUPercent {
			if _, ok := tr.hot[i]; !ok {
				tr.hot[i] = now
			}
			if now.Sub(tr.hot[i]) >= p.CPUFor {
				det.Rule = "cpu"
				det.Detail = fmt.Sprintf("CPU at %.0f%% of %d vCPU for %s (limit %.0f%% for %s)", pct, max(sb.CPUCount, 1),
					now.Sub(tr.hot[i]).Round(time.Second), p.CPUPercent, p.CPUFor)
				return det, true
			}
		} else {
			delete(tr.hot, i)
		}
	}
	if p.IdleFor > 0 {
		if pct < p.IdlePercent {
			if _, ok := tr.idle[i]; !ok {
				tr.idle[i] = now
			}
			if now.Sub(tr.idle[i]) >= p.IdleFor {
				det.Rule = "idle"
				det.Detail = fmt.Sprintf("idle (CPU below %.1f%%) for %s", p.IdlePercent, now.Sub(tr.idle[i]).Round(time.Second))
				return det, true
			}
		} else {
			delete(tr.idle, i)
		}
	}
	return det, false
}

// act records the detection and kills or pauses the sandbox. It reports
// whether the sandbox was dealt with.
func (d *Detector) act(ctx context.Context, det Detection) bool {
	sb := det.Sandbox
	action := det.Policy.Action
	if action == ActionPause && sb.State == store.StatePaused {
		return true
	}
	err := d.ev.Append(ctx, &events.Event{Type: events.SandboxRunawayDetected, TeamID: sb.TeamID, SandboxID: sb.ID,
		SandboxTemplateID: sb.TemplateID, SandboxBuildID: sb.BuildID, SandboxExecutionID: sb.ExecutionID,
		EventData: map[string]any{"rule": det.Rule, "detail": det.Detail, "policy": det.Policy.String(), "action": action,
			"sandbox_metadata": nonNil(sb.Metadata)}})
	if err != nil {
		d.log.Error("record runaway detection", "sandbox.id", sb.ID, "err", err)
	}
	d.log.Warn("runaway sandbox", "sandbox.id", sb.ID, "team.id", sb.TeamID, "rule", det.Rule, "detail", det.Detail, "action", action)
	if action == ActionPause {
		err = d.sbx.PauseWithReason(ctx, sb.ID, Reason)
	} else {
		err = d.sbx.KillWithReason(ctx, sb.ID, Reason)
	}
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		d.log.Error("runaway action failed", "sandbox.id", sb.ID, "action", action, "err", err)
		return false
	}
	if err == nil && d.OnAction != nil {
		d.OnAction(sb.TeamID, action)
	}
	return true
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// Run calls Check every interval until ctx ends.
func (d *Detector) Run(ctx context.Context, interval time.Duration) {
	if len(d.policies) == 0 {
		return
	}
	// Check handles its failures per sandbox: the step never fails.
	periodic.Run(ctx, interval, func(ctx context.Context) error { d.Check(ctx); return nil }, d.log, "runaway check")
}
