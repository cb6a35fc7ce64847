// Package analytics summarises sandbox activity from the lifecycle events:
// creates, kills, lifetimes, peak concurrency, cost, per template and over
// time. Everything is computed from the events table, so it works the same
// for `sbx serve` and `sbx monitor`.
package analytics

import (
	"context"
	"math"
	"sort"
	"time"

	"github.com/sbxdev/sbx/internal/usage"
)

// Summary is the body of GET /analytics/summary.
type Summary struct {
	From               time.Time        `json:"from"`
	To                 time.Time        `json:"to"`
	Created            int              `json:"created"`
	Killed             int              `json:"killed"`
	KillReasons        map[string]int   `json:"killReasons"`
	AvgLifetimeSeconds float64          `json:"avgLifetimeSeconds"`
	P95LifetimeSeconds float64          `json:"p95LifetimeSeconds"`
	PeakConcurrency    int              `json:"peakConcurrency"`
	Running            int              `json:"running"` // alive at To
	Cost               usage.Cost       `json:"cost"`
	ByTemplate         []TemplateTotals `json:"byTemplate"`
}

// TemplateTotals is one template's share of a Summary.
type TemplateTotals struct {
	Template string     `json:"template"`
	Created  int        `json:"created"`
	Killed   int        `json:"killed"`
	Cost     usage.Cost `json:"cost"`
}

// Point is one step of a time series.
type Point struct {
	Time            time.Time `json:"t"` // start of the step
	Created         int       `json:"created"`
	Killed          int       `json:"killed"`
	PeakConcurrency int       `json:"peakConcurrency"`
	CostUSD         float64   `json:"costUsd"`
}

// Service computes analytics over the usage service's sandboxes.
type Service struct{ usage *usage.Service }

// New returns analytics over u.
func New(u *usage.Service) *Service { return &Service{usage: u} }

// Summarize computes the summary of a team (all teams when empty) for [from, to).
func (s *Service) Summarize(ctx context.Context, teamID string, from, to time.Time) (Summary, error) {
	sbs, err := s.usage.Sandboxes(ctx, teamID, from)
	if err != nil {
		return Summary{}, err
	}
	return summarize(sbs, s.usage.Rates(), from, to, s.usage.Now()), nil
}

func in(t, from, to time.Time) bool { return !t.Before(from) && t.Before(to) }

func summarize(sbs []*usage.Sandbox, rates usage.Rates, from, to, now time.Time) Summary {
	sum := Summary{From: from, To: to, KillReasons: map[string]int{}, ByTemplate: []TemplateTotals{}}
	byTpl := map[string]*TemplateTotals{}
	tpl := func(id string) *TemplateTotals {
		if byTpl[id] == nil {
			byTpl[id] = &TemplateTotals{Template: id}
		}
		return byTpl[id]
	}
	var lifetimes []float64
	for _, sb := range sbs {
		c := rates.Price(sb, from, to, now)
		if in(sb.CreatedAt, from, to) {
			sum.Created++
			tpl(sb.TemplateID).Created++
		}
		if !sb.Alive() && in(sb.KilledAt, from, to) {
			sum.Killed++
			sum.KillReasons[sb.KillReason]++
			tpl(sb.TemplateID).Killed++
			lifetimes = append(lifetimes, sb.KilledAt.Sub(sb.CreatedAt).Seconds())
		}
		if c.RunningSeconds > 0 {
			sum.Cost.Add(c)
			tpl(sb.TemplateID).Cost.Add(c)
		}
		if alive(sb, to) {
			sum.Running++
		}
	}
	if n := len(lifetimes); n > 0 {
		sort.Float64s(lifetimes)
		var total float64
		for _, l := range lifetimes {
			total += l
		}
		sum.AvgLifetimeSeconds = total / float64(n)
		sum.P95LifetimeSeconds = lifetimes[int(math.Ceil(0.95*float64(n)))-1] // nearest rank
	}
	sum.PeakConcurrency = peak(sbs, from, to)
	for _, t := range byTpl {
		sum.ByTemplate = append(sum.ByTemplate, *t)
	}
	sort.Slice(sum.ByTemplate, func(i, j int) bool { return sum.ByTemplate[i].Template < sum.ByTemplate[j].Template })
	return sum
}

// alive reports whether sb existed just before t.
func alive(sb *usage.Sandbox, t time.Time) bool {
	return sb.CreatedAt.Before(t) && (sb.Alive() || !sb.KilledAt.Before(t))
}

// peak is the highest number of sandboxes alive (running or paused) at
// once inside [from, to). A kill and a create at the same instant do not
// overlap.
func peak(sbs []*usage.Sandbox, from, to time.Time) int {
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	cur := 0
	for _, sb := range sbs {
		c, k, killed := sb.CreatedAt, sb.KilledAt, !sb.Alive()
		if killed && !c.Before(k) {
			continue // never alive for a measurable instant
		}
		if !c.After(from) && (!killed || k.After(from)) {
			cur++ // alive at from
		}
		if c.After(from) && c.Before(to) {
			edges = append(edges, edge{c, +1})
		}
		if killed && k.After(from) && k.Before(to) {
			edges = append(edges, edge{k, -1})
		}
	}
	sort.Slice(edges, func(i, j int) bool {
		if edges[i].at.Equal(edges[j].at) {
			return edges[i].delta < edges[j].delta
		}
		return edges[i].at.Before(edges[j].at)
	})
	best := cur
	for _, e := range edges {
		cur += e.delta
		best = max(best, cur)
	}
	return best
}

// MaxPoints bounds a time series.
const MaxPoints = 2000

// Timeseries returns one Point per step in [from, to).
func (s *Service) Timeseries(ctx context.Context, teamID string, from, to time.Time, step time.Duration) ([]Point, error) {
	sbs, err := s.usage.Sandboxes(ctx, teamID, from)
	if err != nil {
		return nil, err
	}
	return timeseries(sbs, s.usage.Rates(), from, to, step, s.usage.Now()), nil
}

func timeseries(sbs []*usage.Sandbox, rates usage.Rates, from, to time.Time, step time.Duration, now time.Time) []Point {
	var out []Point
	for t := from; t.Before(to); t = t.Add(step) {
		end := t.Add(step)
		if end.After(to) {
			end = to
		}
		p := Point{Time: t}
		for _, sb := range sbs {
			if in(sb.CreatedAt, t, end) {
				p.Created++
			}
			if !sb.Alive() && in(sb.KilledAt, t, end) {
				p.Killed++
			}
			p.CostUSD += rates.Price(sb, t, end, now).USD
		}
		p.PeakConcurrency = peak(sbs, t, end)
		out = append(out, p)
	}
	return out
}
