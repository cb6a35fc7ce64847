package budget

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/periodic"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/usage"
)

// Admit implements sandbox.Admission: it refuses a create that would break
// one of the team's limits.
func (b *Budgets) Admit(ctx context.Context, teamID, templateID string) error {
	l, err := b.Get(ctx, teamID)
	if err != nil {
		return err
	}
	if l.MaxConcurrent == 0 && l.MaxDailyCreates == 0 && l.MaxDailySpend == 0 && l.MaxMonthlySpend == 0 {
		return nil
	}
	ctx = context.WithoutCancel(ctx) // the events below must be written even if the client left
	// One admission at a time, so two concurrent creates cannot both take
	// the last slot.
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now().UTC()
	pending, err := b.pendingCount(ctx, teamID, now)
	if err != nil {
		return err
	}
	var concurrent, creates int
	if l.MaxConcurrent > 0 {
		concurrent = b.liveCount(teamID) + pending
		if concurrent >= l.MaxConcurrent {
			return b.refuse(ctx, teamID, templateID, LimitConcurrent, float64(concurrent), float64(l.MaxConcurrent),
				fmt.Sprintf("team budget exceeded: max concurrent sandboxes is %d and %d are running; kill one or raise the limit (sbx budget set --max-concurrent N)",
					l.MaxConcurrent, concurrent))
		}
	}
	if l.MaxDailyCreates > 0 {
		n, err := b.createsSince(ctx, teamID, usage.DayStart(now))
		if err != nil {
			return err
		}
		creates = n + pending
		if creates >= l.MaxDailyCreates {
			return b.refuse(ctx, teamID, templateID, LimitDailyCreates, float64(creates), float64(l.MaxDailyCreates),
				fmt.Sprintf("team budget exceeded: max sandboxes created per day is %d and %d were created today (UTC); wait until midnight UTC or raise the limit (sbx budget set --max-daily-creates N)",
					l.MaxDailyCreates, creates))
		}
	}
	if l.MaxDailySpend > 0 || l.MaxMonthlySpend > 0 {
		daily, monthly, err := b.spend(ctx, teamID, now)
		if err != nil {
			return err
		}
		if l.MaxDailySpend > 0 && daily >= l.MaxDailySpend {
			return b.refuse(ctx, teamID, templateID, LimitDailySpend, daily, l.MaxDailySpend,
				fmt.Sprintf("team budget exceeded: max spend per day is $%.4f and $%.4f was spent today (UTC); raise it with sbx budget set --max-daily-spend USD",
					l.MaxDailySpend, daily))
		}
		if l.MaxMonthlySpend > 0 && monthly >= l.MaxMonthlySpend {
			return b.refuse(ctx, teamID, templateID, LimitMonthlySpend, monthly, l.MaxMonthlySpend,
				fmt.Sprintf("team budget exceeded: max spend per month is $%.4f and $%.4f was spent this month (UTC); raise it with sbx budget set --max-monthly-spend USD",
					l.MaxMonthlySpend, monthly))
		}
	}
	b.pending[teamID] = append(b.pending[teamID], now)
	if l.WarnAtPercent > 0 {
		if l.MaxConcurrent > 0 {
			b.warnIfCrossed(ctx, teamID, l, LimitConcurrent, float64(concurrent+1), float64(l.MaxConcurrent), now.Format("2006-01-02T15"))
		}
		if l.MaxDailyCreates > 0 {
			b.warnIfCrossed(ctx, teamID, l, LimitDailyCreates, float64(creates+1), float64(l.MaxDailyCreates), now.Format("2006-01-02"))
		}
	}
	return nil
}

// MaxConcurrent implements sandbox.ConcurrencyLimiter: the sandbox manager
// enforces the budget's max-concurrent with its slot reservation, which
// counts every server's sandboxes under a per-team lock.
func (b *Budgets) MaxConcurrent(ctx context.Context, teamID string) (int, error) {
	l, err := b.Get(ctx, teamID)
	if err != nil {
		return 0, err
	}
	return l.MaxConcurrent, nil
}

// RefuseConcurrent implements sandbox.ConcurrencyLimiter: it records the
// refusal as Admit would and returns the error.
func (b *Budgets) RefuseConcurrent(ctx context.Context, teamID, templateID string, held, max int) error {
	return b.refuse(context.WithoutCancel(ctx), teamID, templateID, LimitConcurrent, float64(held), float64(max),
		fmt.Sprintf("team budget exceeded: max concurrent sandboxes is %d and %d are running; kill one or raise the limit (sbx budget set --max-concurrent N)",
			max, held))
}

// pendingCount returns admitted creates whose created event has not been
// written yet.
func (b *Budgets) pendingCount(ctx context.Context, teamID string, now time.Time) (int, error) {
	list := b.pending[teamID][:0]
	for _, t := range b.pending[teamID] {
		if now.Sub(t) < pendingTTL {
			list = append(list, t)
		}
	}
	if len(list) == 0 {
		delete(b.pending, teamID)
		return 0, nil
	}
	done, err := b.createsSince(ctx, teamID, list[0])
	if err != nil {
		return 0, err
	}
	if done >= len(list) {
		delete(b.pending, teamID)
		return 0, nil
	}
	list = list[done:]
	b.pending[teamID] = list
	return len(list), nil
}

func (b *Budgets) refuse(ctx context.Context, teamID, templateID, limit string, current, max float64, msg string) error {
	if b.OnRefusal != nil {
		b.OnRefusal(teamID, limit)
	}
	err := b.ev.Append(ctx, &events.Event{Type: events.TeamBudgetExceeded, TeamID: teamID, SandboxTemplateID: templateID,
		EventData: map[string]any{"limit": limit, "current": current, "max": max, "message": msg, "refused": "create"}})
	if err != nil {
		b.log.Error("record budget refusal", "team.id", teamID, "err", err)
	}
	b.log.Info("create refused by budget", "team.id", teamID, "limit", limit, "current", current, "max", max)
	return errdefs.Exhausted("%s", msg)
}

// warnIfCrossed fires team.budget.warning once per (limit, period) when
// current reaches warn-at percent of max.
func (b *Budgets) warnIfCrossed(ctx context.Context, teamID string, l Limits, limit string, current, max float64, period string) {
	if l.WarnAtPercent <= 0 || current < max*l.WarnAtPercent/100 {
		return
	}
	b.once(ctx, teamID, "warning:"+limit, period, &events.Event{Type: events.TeamBudgetWarning, TeamID: teamID,
		EventData: map[string]any{"limit": limit, "current": current, "max": max, "warn_at_percent": l.WarnAtPercent,
			"period": period, "message": fmt.Sprintf("team budget warning: %s at %.0f%% (%g of %g)", limit, 100*current/max, current, max)}})
}

// once appends ev unless an alert of kind was already sent in period.
func (b *Budgets) once(ctx context.Context, teamID, kind, period string, ev *events.Event) bool {
	first, err := b.db.RecordBudgetAlert(ctx, teamID, kind, period, b.now())
	if err != nil {
		b.log.Error("record budget alert", "team.id", teamID, "err", err)
		return false
	}
	if !first {
		return false
	}
	if err := b.ev.Append(ctx, ev); err != nil {
		b.log.Error("append budget event", "team.id", teamID, "type", ev.Type, "err", err)
	}
	return true
}

// Check evaluates the spend limits of every team that has one: warnings,
// exceeded events (once per period) and the configured action on the
// team's sandboxes while the limit stays exceeded.
func (b *Budgets) Check(ctx context.Context) error {
	teams, err := b.db.TeamsWithBudgets(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range teams {
		if err := b.checkTeam(ctx, t); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (b *Budgets) checkTeam(ctx context.Context, teamID string) error {
	l, err := b.Get(ctx, teamID)
	if err != nil {
		return err
	}
	now := b.now().UTC()
	var daily, monthly float64
	if l.MaxDailySpend > 0 || l.MaxMonthlySpend > 0 {
		if daily, monthly, err = b.spend(ctx, teamID, now); err != nil {
			return err
		}
	}
	exceeded := false
	for _, c := range []struct {
		limit      string
		spent, max float64
		period     string
	}{
		{LimitDailySpend, daily, l.MaxDailySpend, now.Format("2006-01-02")},
		{LimitMonthlySpend, monthly, l.MaxMonthlySpend, now.Format("2006-01")},
	} {
		if c.max <= 0 {
			continue
		}
		b.warnIfCrossed(ctx, teamID, l, c.limit, c.spent, c.max, c.period)
		if c.spent < c.max {
			continue
		}
		exceeded = true
		b.once(ctx, teamID, "exceeded:"+c.limit, c.period, &events.Event{Type: events.TeamBudgetExceeded, TeamID: teamID,
			EventData: map[string]any{"limit": c.limit, "current": c.spent, "max": c.max, "period": c.period, "action": l.Action,
				"message": fmt.Sprintf("team budget exceeded: %s is $%.4f and $%.4f was spent", c.limit, c.max, c.spent)}})
	}
	if exceeded {
		b.act(ctx, teamID, l.Action)
	}
	return b.checkCounts(ctx, teamID, l, now)
}

// checkCounts alerts on sandbox counts observed over a limit. Under `sbx
// serve` admission keeps them at or below it; `sbx monitor` sees E2B's
// sandboxes after the fact and can only alert.
func (b *Budgets) checkCounts(ctx context.Context, teamID string, l Limits, now time.Time) error {
	type count struct {
		limit        string
		current, max int
		period       string
	}
	var counts []count
	if l.MaxConcurrent > 0 {
		counts = append(counts, count{LimitConcurrent, b.liveCount(teamID), l.MaxConcurrent, now.Format("2006-01-02T15")})
	}
	if l.MaxDailyCreates > 0 {
		n, err := b.createsSince(ctx, teamID, usage.DayStart(now))
		if err != nil {
			return err
		}
		counts = append(counts, count{LimitDailyCreates, n, l.MaxDailyCreates, now.Format("2006-01-02")})
	}
	for _, c := range counts {
		b.warnIfCrossed(ctx, teamID, l, c.limit, float64(c.current), float64(c.max), c.period)
		if c.current > c.max {
			b.once(ctx, teamID, "exceeded:"+c.limit, c.period, &events.Event{Type: events.TeamBudgetExceeded, TeamID: teamID,
				EventData: map[string]any{"limit": c.limit, "current": c.current, "max": c.max, "period": c.period,
					"message": fmt.Sprintf("team budget exceeded: %s is %d and %d were observed", c.limit, c.max, c.current)}})
		}
	}
	return nil
}

// act pauses or kills the team's sandboxes after a spend breach.
func (b *Budgets) act(ctx context.Context, teamID, action string) {
	if b.sbx == nil || action == ActionNone || action == "" {
		return
	}
	for _, s := range b.sbx.Live() {
		if s.TeamID != teamID {
			continue
		}
		var err error
		switch {
		case action == ActionKill:
			err = b.sbx.KillWithReason(ctx, s.ID, Reason)
		case action == ActionPause && s.State == store.StateRunning:
			err = b.sbx.PauseWithReason(ctx, s.ID, Reason)
		default:
			continue
		}
		if err != nil {
			b.log.Warn("budget action failed", "action", action, "sandbox.id", s.ID, "team.id", teamID, "err", err)
			continue
		}
		b.log.Info("budget action", "action", action, "sandbox.id", s.ID, "team.id", teamID)
		if b.OnAction != nil {
			b.OnAction(teamID, action)
		}
	}
}

// Run calls Check every interval until ctx ends.
func (b *Budgets) Run(ctx context.Context, interval time.Duration) {
	periodic.Run(ctx, interval, b.Check, b.log, "budget check failed")
}
