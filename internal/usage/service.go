package usage

import (
	"context"
	"time"

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
	sbs, err := Load(ctx, s.src, teamID, from)
	if err != nil {
		return nil, err
	}
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
	return sbs, nil
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
