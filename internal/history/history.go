// Package history keeps the recent resource samples of sandboxes and the
// activity of teams (concurrent sandboxes, start rate), sampled
// periodically, in memory with bounded retention. It serves E2B's metrics
// routes: a sandbox's metrics over [start, end], several sandboxes' latest,
// a team's series and its maximum.
//
// In memory, not in the database: a sample is worth little after an hour,
// a server samples only the sandboxes it runs (their cgroups are local),
// and the write rate (one row per sandbox every few seconds) would dwarf
// every other write. A restarted server starts a new history.
package history

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store"
)

// Source is what is sampled: the live sandboxes, and one sample of a
// running sandbox (the sandbox manager).
type Source interface {
	Live() []store.Sandbox
	Metrics(ctx context.Context, teamID, id string) ([]sandbox.Metric, error)
}

// TeamSample is one sample of a team's activity.
type TeamSample struct {
	At         time.Time
	Concurrent int     // running sandboxes
	StartRate  float64 // sandboxes started per second since the previous sample
}

// Defaults.
const (
	DefaultInterval  = 5 * time.Second
	DefaultRetention = time.Hour
	// TeamRetention is how long team samples are kept: the dashboard
	// shows a day.
	TeamRetention = 24 * time.Hour
)

// History samples a Source and keeps what it sampled.
type History struct {
	src       Source
	log       *slog.Logger
	interval  time.Duration
	retention time.Duration
	now       func() time.Time

	mu        sync.Mutex
	sandboxes map[string]*series // by sandbox ID
	teams     map[string][]TeamSample
	lastTick  time.Time
}

type series struct {
	teamID  string
	samples []sandbox.Metric // oldest first
}

// New returns a history sampling src every interval and keeping samples
// for retention (zero: the defaults).
func New(src Source, interval, retention time.Duration, log *slog.Logger) *History {
	if interval <= 0 {
		interval = DefaultInterval
	}
	if retention <= 0 {
		retention = DefaultRetention
	}
	return &History{src: src, log: log, interval: interval, retention: retention, now: time.Now,
		sandboxes: map[string]*series{}, teams: map[string][]TeamSample{}}
}

// SetClock replaces the clock (tests).
func (h *History) SetClock(now func() time.Time) { h.now = now }

// Run samples until ctx ends.
func (h *History) Run(ctx context.Context) {
	t := time.NewTicker(h.interval)
	defer t.Stop()
	for {
		h.Sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sample takes one sample of every running sandbox and every team with
// sandboxes, and drops what is older than the retention.
func (h *History) Sample(ctx context.Context) {
	now := h.now().UTC()
	live := h.src.Live()
	type team struct {
		running, started int
	}
	teams := map[string]*team{}
	h.mu.Lock()
	prev := h.lastTick
	h.lastTick = now
	h.mu.Unlock()
	for _, sb := range live {
		tm := teams[sb.TeamID]
		if tm == nil {
			tm = &team{}
			teams[sb.TeamID] = tm
		}
		if !prev.IsZero() && sb.StartedAt.After(prev) && !sb.StartedAt.After(now) {
			tm.started++
		}
		if sb.State != store.StateRunning {
			continue
		}
		tm.running++
		ms, err := h.src.Metrics(ctx, sb.TeamID, sb.ID)
		if err != nil || len(ms) == 0 {
			h.log.Debug("sample sandbox metrics", "sandbox.id", sb.ID, "err", err)
			continue
		}
		h.Record(sb.TeamID, sb.ID, ms[0])
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var secs float64
	if !prev.IsZero() {
		secs = now.Sub(prev).Seconds()
	}
	for id, tm := range teams {
		s := TeamSample{At: now, Concurrent: tm.running}
		if secs > 0 {
			s.StartRate = float64(tm.started) / secs
		}
		h.teams[id] = append(h.teams[id], s)
	}
	// A team whose sandboxes are all gone gets one zero sample, so its
	// series drops to zero rather than ending on its last count; then no
	// more until it has sandboxes again.
	for id, ss := range h.teams {
		if _, ok := teams[id]; !ok && len(ss) > 0 && (ss[len(ss)-1].Concurrent > 0 || ss[len(ss)-1].StartRate > 0) {
			h.teams[id] = append(ss, TeamSample{At: now})
		}
	}
	h.pruneLocked(now)
}

// Record adds one sample of a sandbox (the sampler's, and each live sample
// a client asked for, so a client's own reads are in the history too).
func (h *History) Record(teamID, id string, m sandbox.Metric) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.sandboxes[id]
	if s == nil {
		s = &series{teamID: teamID}
		h.sandboxes[id] = s
	}
	if n := len(s.samples); n > 0 && !m.Timestamp.After(s.samples[n-1].Timestamp) {
		return // keep the series ordered; a sample at the same instant adds nothing
	}
	s.samples = append(s.samples, m)
	// Bound each series by count too, so a tiny --metrics-interval cannot
	// grow it without limit within the retention.
	if max := h.maxSamples(); len(s.samples) > max {
		s.samples = append(s.samples[:0], s.samples[len(s.samples)-max:]...)
	}
}

func (h *History) maxSamples() int {
	return int(h.retention/h.interval) + 16 // + client reads between ticks
}

func (h *History) pruneLocked(now time.Time) {
	cut := now.Add(-h.retention)
	for id, s := range h.sandboxes {
		i := sort.Search(len(s.samples), func(i int) bool { return !s.samples[i].Timestamp.Before(cut) })
		if i == len(s.samples) {
			delete(h.sandboxes, id) // nothing left: killed over an hour ago
			continue
		}
		s.samples = s.samples[i:]
	}
	teamCut := now.Add(-TeamRetention)
	for id, ss := range h.teams {
		i := sort.Search(len(ss), func(i int) bool { return !ss[i].At.Before(teamCut) })
		if i == len(ss) {
			delete(h.teams, id)
			continue
		}
		h.teams[id] = ss[i:]
	}
}

// Sandbox returns a sandbox's samples with start <= timestamp <= end
// (zero bounds are open), oldest first.
func (h *History) Sandbox(id string, start, end time.Time) []sandbox.Metric {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.sandboxes[id]
	if s == nil {
		return nil
	}
	var out []sandbox.Metric
	for _, m := range s.samples {
		if (start.IsZero() || !m.Timestamp.Before(start)) && (end.IsZero() || !m.Timestamp.After(end)) {
			out = append(out, m)
		}
	}
	return out
}

// Latest returns a sandbox's newest sample.
func (h *History) Latest(id string) (sandbox.Metric, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.sandboxes[id]
	if s == nil || len(s.samples) == 0 {
		return sandbox.Metric{}, false
	}
	return s.samples[len(s.samples)-1], true
}

// Team returns a team's samples within [start, end], oldest first.
func (h *History) Team(teamID string, start, end time.Time) []TeamSample {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []TeamSample
	for _, s := range h.teams[teamID] {
		if (start.IsZero() || !s.At.Before(start)) && (end.IsZero() || !s.At.After(end)) {
			out = append(out, s)
		}
	}
	return out
}
