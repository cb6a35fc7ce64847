// Package usage turns the durable lifecycle events into what sandboxes cost:
// allocated vCPU-seconds and GiB-seconds over running time (paused time is
// not billed, as E2B bills), priced with configurable rates, and totals per
// team, template, day and refinement.
//
// Everything is derived from the events table, so the numbers survive a
// restart and work the same for `sbx serve` and for `sbx monitor` (which
// stores E2B's webhook events in its own events table).
package usage

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/sbxdev/sbx/internal/events"
)

// Rates prices allocated resources.
type Rates struct {
	VCPUSecond float64 // USD per vCPU-second
	GiBSecond  float64 // USD per GiB-second of memory
}

// DefaultRates are E2B's published prices.
func DefaultRates() Rates { return Rates{VCPUSecond: 0.000014, GiBSecond: 0.0000045} }

// Validate rejects negative rates.
func (r Rates) Validate() error {
	if r.VCPUSecond < 0 || r.GiBSecond < 0 || math.IsNaN(r.VCPUSecond) || math.IsNaN(r.GiBSecond) {
		return fmt.Errorf("usage rates must be ≥ 0, got vcpu=%v gib=%v", r.VCPUSecond, r.GiBSecond)
	}
	return nil
}

// Sandbox is one sandbox as reconstructed from its lifecycle events.
type Sandbox struct {
	ID         string
	TeamID     string
	TemplateID string
	Refinement string // metadata refinement_id, if any
	Metadata   map[string]string
	VCPU       int
	MemoryMB   int
	CreatedAt  time.Time
	KilledAt   time.Time // zero while alive
	KillReason string
	Paused     bool       // last known state
	Running    []Interval // billed intervals; the last has a zero End while running
}

// Alive reports whether the sandbox was not killed by the end of the events.
func (s *Sandbox) Alive() bool { return s.KilledAt.IsZero() }

// Interval is a half-open running period [Start, End); End zero = still running.
type Interval struct{ Start, End time.Time }

// Lifecycle lists the event types Build reads.
var Lifecycle = []string{events.SandboxCreated, events.SandboxKilled, events.SandboxPaused, events.SandboxResumed, events.SandboxUpdated}

// Build reconstructs sandboxes from lifecycle events in log order. Events
// of other types are ignored.
func Build(evs []events.Event) []*Sandbox {
	b := newBuilder()
	for i := range evs {
		b.apply(&evs[i])
	}
	return b.order
}

// builder folds events into sandboxes, incrementally.
type builder struct {
	byID  map[string]*Sandbox
	order []*Sandbox
}

func newBuilder() *builder { return &builder{byID: map[string]*Sandbox{}} }

func (b *builder) apply(ev *events.Event) {
	if ev.SandboxID == "" {
		return
	}
	s := b.byID[ev.SandboxID]
	if s == nil {
		if ev.Type != events.SandboxCreated && ev.Type != events.SandboxResumed &&
			ev.Type != events.SandboxKilled && ev.Type != events.SandboxPaused {
			return
		}
		s = &Sandbox{ID: ev.SandboxID, TeamID: ev.TeamID, TemplateID: ev.SandboxTemplateID, CreatedAt: ev.Timestamp}
		b.byID[ev.SandboxID] = s
		b.order = append(b.order, s)
		if ev.Type == events.SandboxKilled || ev.Type == events.SandboxPaused {
			// First seen mid-life (a consumer that subscribed late):
			// bill from the execution start it reports.
			if st, ok := startedAt(ev); ok {
				s.CreatedAt = st
				s.Running = []Interval{{Start: st}}
			}
		}
	}
	readExecution(s, ev)
	readMetadata(s, ev)
	switch ev.Type {
	case events.SandboxCreated:
		if len(s.Running) == 0 {
			s.Running = append(s.Running, Interval{Start: ev.Timestamp})
		}
	case events.SandboxResumed:
		if n := len(s.Running); n == 0 || !s.Running[n-1].End.IsZero() {
			s.Running = append(s.Running, Interval{Start: ev.Timestamp})
		}
		s.Paused = false
	case events.SandboxPaused:
		s.close(ev.Timestamp)
		s.Paused = true
	case events.SandboxKilled:
		s.close(ev.Timestamp)
		s.KilledAt = ev.Timestamp
		if r, ok := ev.EventData["kill_reason"].(string); ok {
			s.KillReason = r
		}
	}
}

// prune drops sandboxes killed before t.
func (b *builder) prune(t time.Time) {
	keep := b.order[:0]
	for _, s := range b.order {
		if s.Alive() || !s.KilledAt.Before(t) {
			keep = append(keep, s)
		} else {
			delete(b.byID, s.ID)
		}
	}
	clear(b.order[len(keep):])
	b.order = keep
}

func (s *Sandbox) close(at time.Time) {
	if n := len(s.Running); n > 0 && s.Running[n-1].End.IsZero() {
		s.Running[n-1].End = at
	}
}

func startedAt(ev *events.Event) (time.Time, bool) {
	ex, _ := ev.EventData["execution"].(map[string]any)
	v, _ := ex["started_at"].(string)
	t, err := time.Parse(time.RFC3339Nano, v)
	return t, err == nil
}

func readExecution(s *Sandbox, ev *events.Event) {
	ex, ok := ev.EventData["execution"].(map[string]any)
	if !ok {
		return
	}
	if n, ok := number(ex["vcpu_count"]); ok && n > 0 {
		s.VCPU = int(n)
	}
	if n, ok := number(ex["memory_mb"]); ok && n > 0 {
		s.MemoryMB = int(n)
	}
}

func readMetadata(s *Sandbox, ev *events.Event) {
	md, ok := ev.EventData["sandbox_metadata"].(map[string]any)
	if !ok {
		return
	}
	s.Metadata = make(map[string]string, len(md))
	for k, v := range md {
		if str, ok := v.(string); ok {
			s.Metadata[k] = str
		}
	}
	if r := s.Metadata["refinement_id"]; r != "" {
		s.Refinement = r
	}
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case string:
		f, err := strconv.ParseFloat(n, 64)
		return f, err == nil
	}
	return 0, false
}

// RunningSeconds returns the running time of s inside [from, to), counting
// an open interval as running until now.
func (s *Sandbox) RunningSeconds(from, to, now time.Time) float64 {
	var total time.Duration
	for _, iv := range s.Running {
		end := iv.End
		if end.IsZero() {
			end = now
		}
		st := maxTime(iv.Start, from)
		en := minTime(end, to)
		if en.After(st) {
			total += en.Sub(st)
		}
	}
	return total.Seconds()
}

// Cost is the allocated usage of some running time and its price.
type Cost struct {
	RunningSeconds float64 `json:"runningSeconds"`
	VCPUSeconds    float64 `json:"vcpuSeconds"`
	GiBSeconds     float64 `json:"gibSeconds"`
	USD            float64 `json:"costUsd"`
}

// Add accumulates o into c.
func (c *Cost) Add(o Cost) {
	c.RunningSeconds += o.RunningSeconds
	c.VCPUSeconds += o.VCPUSeconds
	c.GiBSeconds += o.GiBSeconds
	c.USD += o.USD
}

// Price returns the cost of s inside [from, to).
func (r Rates) Price(s *Sandbox, from, to, now time.Time) Cost {
	secs := s.RunningSeconds(from, to, now)
	c := Cost{RunningSeconds: secs, VCPUSeconds: secs * float64(s.VCPU), GiBSeconds: secs * float64(s.MemoryMB) / 1024}
	c.USD = c.VCPUSeconds*r.VCPUSecond + c.GiBSeconds*r.GiBSecond
	return c
}

// Group keys accepted by Totals.
const (
	ByTeam       = "team"
	ByTemplate   = "template"
	ByDay        = "day"
	ByRefinement = "refinement"
	BySandbox    = "sandbox"
)

// GroupKeys lists the valid groupBy values.
var GroupKeys = []string{ByTeam, ByTemplate, ByDay, ByRefinement, BySandbox}

// Total is the cost of one group.
type Total struct {
	Key       string `json:"key"`
	Sandboxes int    `json:"sandboxes"`
	Cost
}

// Totals prices sandboxes inside [from, to) grouped by one of GroupKeys.
// Days are UTC calendar days; a sandbox running across midnight is split.
func (r Rates) Totals(sbs []*Sandbox, groupBy string, from, to, now time.Time) ([]Total, error) {
	m := map[string]*Total{}
	add := func(key string, c Cost) {
		t := m[key]
		if t == nil {
			t = &Total{Key: key}
			m[key] = t
		}
		t.Sandboxes++
		t.Cost.Add(c)
	}
	for _, s := range sbs {
		switch groupBy {
		case ByDay:
			for d := dayStart(from); d.Before(to); d = d.AddDate(0, 0, 1) {
				c := r.Price(s, maxTime(d, from), minTime(d.AddDate(0, 0, 1), to), now)
				if c.RunningSeconds > 0 {
					add(d.Format("2006-01-02"), c)
				}
			}
			continue
		}
		c := r.Price(s, from, to, now)
		if c.RunningSeconds == 0 {
			continue
		}
		switch groupBy {
		case ByTeam:
			add(s.TeamID, c)
		case ByTemplate:
			add(s.TemplateID, c)
		case ByRefinement:
			add(s.Refinement, c)
		case BySandbox:
			add(s.ID, c)
		default:
			return nil, fmt.Errorf("groupBy %q: use one of team, template, day, refinement, sandbox", groupBy)
		}
	}
	out := make([]Total, 0, len(m))
	for _, t := range m {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func dayStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

// DayStart returns the UTC midnight starting t's day.
func DayStart(t time.Time) time.Time { return dayStart(t) }

// MonthStart returns the first instant of t's UTC month.
func MonthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// Source reads lifecycle events; *events.Log implements it.
type Source interface {
	After(ctx context.Context, after int64, limit int, f events.Filter) ([]events.Event, error)
}

// Load reads every lifecycle event of team (all teams when empty) and
// rebuilds its sandboxes. Sandboxes killed before from are dropped.
func Load(ctx context.Context, src Source, teamID string, from time.Time) ([]*Sandbox, error) {
	var all []events.Event
	f := events.Filter{TeamID: teamID, Types: Lifecycle}
	after := int64(0)
	for {
		evs, err := src.After(ctx, after, 1000, f)
		if err != nil {
			return nil, fmt.Errorf("load usage events: %w", err)
		}
		all = append(all, evs...)
		if len(evs) < 1000 {
			break
		}
		after = evs[len(evs)-1].Seq
	}
	sbs := Build(all)
	out := sbs[:0]
	for _, s := range sbs {
		if s.Alive() || !s.KilledAt.Before(from) {
			out = append(out, s)
		}
	}
	return out, nil
}
