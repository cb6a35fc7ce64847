package usage

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/events"

	"github.com/sbxdev/sbx/internal/store"
)

// Service answers usage questions over an event source. Live sandboxes
// fill in what the created event does not carry (allocated vCPU and
// memory arrive only with paused/killed events).
type Service struct {
	src   Source
	rates Rates
	live  func() []store.Sandbox // nil = events only
	now   func() time.Time

	// Used when neither events nor the live list say how big a sandbox is
	// (a consumer of E2B's webhooks sees sizes only at pause/kill).
	DefaultVCPU     int
	DefaultMemoryMB int

	mu    sync.Mutex
	cache map[string]*teamCache // by team ("" = all teams)
}

// Retention is how far back the incremental cache keeps killed sandboxes;
// questions about older periods read the whole log.
const Retention = 62 * 24 * time.Hour

// teamCache holds one team's sandboxes folded from the log up to seq, so a
// budget check per create reads only the events since the previous one.
type teamCache struct {
	mu        sync.Mutex
	b         *builder
	seq       int64
	pruned    time.Time // killed before this were dropped
	lastPrune time.Time
}

// NewService returns a usage service. live may be nil.
func NewService(src Source, rates Rates, live func() []store.Sandbox) *Service {
	return &Service{src: src, rates: rates, live: live, now: time.Now}
}

// SetClock replaces the clock (tests).
func (s *Service) SetClock(now func() time.Time) { s.now = now }

// Now returns the service's current time.
func (s *Service) Now() time.Time { return s.now().UTC() }

// Rates returns the prices in use.
func (s *Service) Rates() Rates { return s.rates }

// Sandboxes returns the team's sandboxes alive at or after from (all teams
// when teamID is empty), with sizes filled in.
func (s *Service) Sandboxes(ctx context.Context, teamID string, from time.Time) ([]*Sandbox, error) {
	var sbs []*Sandbox
	var err error
	if from.Before(s.Now().Add(-Retention + time.Hour)) {
		sbs, err = Load(ctx, s.src, teamID, from)
	} else {
		sbs, err = s.cached(ctx, teamID, from)
	}
	if err != nil {
		return nil, err
	}
	return s.sized(sbs), nil
}

// Sandbox returns one sandbox of the team, read from its own events.
func (s *Service) Sandbox(ctx context.Context, teamID, id string) (*Sandbox, error) {
	evs, err := s.src.After(ctx, 0, 10000, events.Filter{TeamID: teamID, SandboxID: id, Types: Lifecycle})
	if err != nil {
		return nil, fmt.Errorf("load events of sandbox %s: %w", id, err)
	}
	sbs := s.sized(Build(evs))
	if len(sbs) == 0 {
		return nil, nil
	}
	return sbs[0], nil
}

func (s *Service) cached(ctx context.Context, teamID string, from time.Time) ([]*Sandbox, error) {
	s.mu.Lock()
	if s.cache == nil {
		s.cache = map[string]*teamCache{}
	}
	tc := s.cache[teamID]
	if tc == nil {
		tc = &teamCache{b: newBuilder()}
		s.cache[teamID] = tc
	}
	s.mu.Unlock()

	tc.mu.Lock()
	defer tc.mu.Unlock()
	f := events.Filter{TeamID: teamID, Types: Lifecycle}
	for {
		evs, err := s.src.After(ctx, tc.seq, 1000, f)
		if err != nil {
			return nil, fmt.Errorf("load usage events: %w", err)
		}
		for i := range evs {
			tc.b.apply(&evs[i])
			tc.seq = evs[i].Seq
		}
		if len(evs) < 1000 {
			break
		}
	}
	now := s.Now()
	if now.Sub(tc.lastPrune) > time.Hour {
		tc.pruned = now.Add(-Retention)
		tc.b.prune(tc.pruned)
		tc.lastPrune = now
	}
	// Copies: callers fill in sizes, and the builder keeps changing its own.
	out := make([]*Sandbox, 0, len(tc.b.order))
	for _, sb := range tc.b.order {
		if !sb.Alive() && sb.KilledAt.Before(from) {
			continue
		}
		c := *sb
		c.Running = append([]Interval(nil), sb.Running...)
		out = append(out, &c)
	}
	return out, nil
}

// sized fills in sizes the events did not carry.
func (s *Service) sized(sbs []*Sandbox) []*Sandbox {
	var sizes map[string]store.Sandbox
	if s.live != nil {
		live := s.live()
		sizes = make(map[string]store.Sandbox, len(live))
		for _, l := range live {
			sizes[l.ID] = l
		}
	}
	for _, sb := range sbs {
		if l, ok := sizes[sb.ID]; ok {
			if sb.VCPU == 0 {
				sb.VCPU = l.CPUCount
			}
			if sb.MemoryMB == 0 {
				sb.MemoryMB = l.MemoryMB
			}
		}
		if sb.VCPU == 0 {
			sb.VCPU = s.DefaultVCPU
		}
		if sb.MemoryMB == 0 {
			sb.MemoryMB = s.DefaultMemoryMB
		}
	}
	return sbs
}

// Spend returns the team's cost in USD inside [from, to).
func (s *Service) Spend(ctx context.Context, teamID string, from, to time.Time) (float64, error) {
	sbs, err := s.Sandboxes(ctx, teamID, from)
	if err != nil {
		return 0, err
	}
	now := s.Now()
	var total float64
	for _, sb := range sbs {
		total += s.rates.Price(sb, from, to, now).USD
	}
	return total, nil
}
