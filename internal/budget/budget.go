// Package budget enforces per-team spending and sandbox limits: max
// concurrent sandboxes, max creates per UTC day, max spend per UTC day and
// month. A create over a limit is refused with errdefs.Exhausted (HTTP 429,
// the E2B SDK's RateLimitError) and a team.budget.exceeded event, so
// webhooks fire; a team.budget.warning event fires once per period when
// usage crosses the warn-at percentage. A spend breach can also pause or
// kill the team's sandboxes (reason "budget").
package budget

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/usage"
)

// Actions on a spend breach.
const (
	ActionNone  = "none"
	ActionPause = "pause"
	ActionKill  = "kill"
)

// Reason is the kill_reason / pause_reason recorded for budget actions.
const Reason = "budget"

// Limit names, used in messages, events and metrics.
const (
	LimitConcurrent    = "max_concurrent"
	LimitDailyCreates  = "max_daily_creates"
	LimitDailySpend    = "max_daily_spend"
	LimitMonthlySpend  = "max_monthly_spend"
	DefaultWarnPercent = 80
)

// Limits is one team's budget. Zero means no limit.
type Limits struct {
	MaxConcurrent   int     `json:"maxConcurrent"`
	MaxDailyCreates int     `json:"maxDailyCreates"`
	MaxDailySpend   float64 `json:"maxDailySpendUsd"`
	MaxMonthlySpend float64 `json:"maxMonthlySpendUsd"`
	WarnAtPercent   float64 `json:"warnAtPercent"` // 0 = no warnings
	Action          string  `json:"action"`        // on a spend breach: none, pause, kill
}

// Validate says what is wrong with l.
func (l Limits) Validate() error {
	switch {
	case l.MaxConcurrent < 0:
		return errdefs.Invalid("maxConcurrent must be ≥ 0 (0 = no limit), got %d", l.MaxConcurrent)
	case l.MaxDailyCreates < 0:
		return errdefs.Invalid("maxDailyCreates must be ≥ 0 (0 = no limit), got %d", l.MaxDailyCreates)
	case l.MaxDailySpend < 0 || math.IsNaN(l.MaxDailySpend) || math.IsInf(l.MaxDailySpend, 0):
		return errdefs.Invalid("maxDailySpendUsd must be a number ≥ 0 (0 = no limit), got %v", l.MaxDailySpend)
	case l.MaxMonthlySpend < 0 || math.IsNaN(l.MaxMonthlySpend) || math.IsInf(l.MaxMonthlySpend, 0):
		return errdefs.Invalid("maxMonthlySpendUsd must be a number ≥ 0 (0 = no limit), got %v", l.MaxMonthlySpend)
	case l.WarnAtPercent < 0 || l.WarnAtPercent > 100 || math.IsNaN(l.WarnAtPercent):
		return errdefs.Invalid("warnAtPercent must be between 0 and 100 (0 = no warnings), got %v", l.WarnAtPercent)
	}
	switch l.Action {
	case "", ActionNone, ActionPause, ActionKill:
	default:
		return errdefs.Invalid("action %q: use none, pause or kill", l.Action)
	}
	return nil
}

// Sandboxes is what budgets need from the sandbox manager.
type Sandboxes interface {
	Live() []store.Sandbox
	KillWithReason(ctx context.Context, id, reason string) error
	PauseWithReason(ctx context.Context, id, reason string) error
}

// Appender records events (*events.Log).
type Appender interface {
	Append(ctx context.Context, ev *events.Event) error
}

// Repository keeps budgets (sqlstore.Store implements it).
type Repository interface {
	// Budget returns a team's limits; found is false when none were set.
	Budget(ctx context.Context, teamID string) (l store.BudgetLimits, found bool, err error)
	// SetBudget stores a team's limits.
	SetBudget(ctx context.Context, teamID string, l store.BudgetLimits, at time.Time) error
	// TeamsWithBudgets lists the teams with at least one limit set.
	TeamsWithBudgets(ctx context.Context) ([]string, error)
	// RecordBudgetAlert notes an alert of kind for the team in period;
	// false when one was already noted.
	RecordBudgetAlert(ctx context.Context, teamID, kind, period string, at time.Time) (bool, error)
	// EventsSince counts the team's events of a type since a time.
	EventsSince(ctx context.Context, teamID, eventType string, since time.Time) (int, error)
}

// Budgets stores limits and enforces them. Safe for concurrent use.
type Budgets struct {
	db    Repository
	ev    Appender
	usage *usage.Service
	sbx   Sandboxes
	log   *slog.Logger
	now   func() time.Time

	// OnRefusal, if set, is called for each refused create (metrics).
	OnRefusal func(teamID, limit string)
	// OnAction, if set, is called for each sandbox paused or killed.
	OnAction func(teamID, action string)
	// TeamExists, if set, checks a team ID the admin names (an
	// errdefs.ErrNotFound error for a missing team).
	TeamExists func(ctx context.Context, teamID string) error

	mu      sync.Mutex
	pending map[string][]time.Time // team -> admitted creates not yet seen as created events
}

// pendingTTL bounds how long an admitted create counts as in flight before
// its created event appears (a create that failed never produces one).
const pendingTTL = 65 * time.Second

// NewWithRepository returns budgets over repo.
func NewWithRepository(_ context.Context, repo Repository, ev Appender, u *usage.Service, sbx Sandboxes, log *slog.Logger) (*Budgets, error) {
	return &Budgets{db: repo, ev: ev, usage: u, sbx: sbx, log: log, now: time.Now, pending: map[string][]time.Time{}}, nil
}

// SetClock replaces the clock (tests).
func (b *Budgets) SetClock(now func() time.Time) { b.now = now }

// Get returns a team's limits (zero Limits when none were set).
func (b *Budgets) Get(ctx context.Context, teamID string) (Limits, error) {
	r, found, err := b.db.Budget(ctx, teamID)
	if err != nil {
		return Limits{}, err
	}
	if !found {
		return Limits{Action: ActionNone}, nil
	}
	return Limits(r), nil
}

// Set stores a team's limits.
func (b *Budgets) Set(ctx context.Context, teamID string, l Limits) error {
	if err := l.Validate(); err != nil {
		return err
	}
	if l.Action == "" {
		l.Action = ActionNone
	}
	return b.db.SetBudget(ctx, teamID, store.BudgetLimits(l), b.now())
}

// Status is a team's current consumption against its limits.
type Status struct {
	Concurrent   int     `json:"concurrent"`
	DailyCreates int     `json:"dailyCreates"`
	DailySpend   float64 `json:"dailySpendUsd"`
	MonthlySpend float64 `json:"monthlySpendUsd"`
}

// Status measures a team's consumption now.
func (b *Budgets) Status(ctx context.Context, teamID string) (Status, error) {
	now := b.now().UTC()
	var st Status
	st.Concurrent = b.liveCount(teamID)
	n, err := b.createsSince(ctx, teamID, usage.DayStart(now))
	if err != nil {
		return st, err
	}
	st.DailyCreates = n
	if st.DailySpend, st.MonthlySpend, err = b.spend(ctx, teamID, now); err != nil {
		return st, err
	}
	return st, nil
}

func (b *Budgets) spend(ctx context.Context, teamID string, now time.Time) (daily, monthly float64, err error) {
	sbs, err := b.usage.Sandboxes(ctx, teamID, usage.MonthStart(now))
	if err != nil {
		return 0, 0, err
	}
	rates := b.usage.Rates()
	day, month := usage.DayStart(now), usage.MonthStart(now)
	end := now.Add(time.Second)
	for _, s := range sbs {
		daily += rates.Price(s, day, end, now).USD
		monthly += rates.Price(s, month, end, now).USD
	}
	return daily, monthly, nil
}

func (b *Budgets) liveCount(teamID string) int {
	if b.sbx == nil {
		return 0
	}
	n := 0
	for _, s := range b.sbx.Live() {
		if s.TeamID == teamID {
			n++
		}
	}
	return n
}

func (b *Budgets) createsSince(ctx context.Context, teamID string, since time.Time) (int, error) {
	return b.db.EventsSince(ctx, teamID, events.SandboxCreated, since)
}
