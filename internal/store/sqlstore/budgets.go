package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/sbxdev/sbx/internal/store"
)

// The budgets repository (package budget's Repository).

// Budget returns a team's limits; found is false when none were set.
func (s *Store) Budget(ctx context.Context, teamID string) (l store.BudgetLimits, found bool, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT max_concurrent, max_daily_creates, max_daily_spend,
		max_monthly_spend, warn_at_percent, action FROM budgets WHERE team_id = ?`, teamID).
		Scan(&l.MaxConcurrent, &l.MaxDailyCreates, &l.MaxDailySpend, &l.MaxMonthlySpend, &l.WarnAtPercent, &l.Action)
	if errors.Is(err, sql.ErrNoRows) {
		return store.BudgetLimits{}, false, nil
	}
	if err != nil {
		return l, false, fmt.Errorf("read budget of team %s: %w", teamID, err)
	}
	return l, true, nil
}

// SetBudget stores a team's limits.
func (s *Store) SetBudget(ctx context.Context, teamID string, l store.BudgetLimits, at time.Time) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO budgets (team_id, max_concurrent, max_daily_creates,
		max_daily_spend, max_monthly_spend, warn_at_percent, action, updated_at) VALUES (?,?,?,?,?,?,?,?)
		ON CONFLICT(team_id) DO UPDATE SET max_concurrent=excluded.max_concurrent,
		max_daily_creates=excluded.max_daily_creates, max_daily_spend=excluded.max_daily_spend,
		max_monthly_spend=excluded.max_monthly_spend, warn_at_percent=excluded.warn_at_percent,
		action=excluded.action, updated_at=excluded.updated_at`,
		teamID, l.MaxConcurrent, l.MaxDailyCreates, l.MaxDailySpend, l.MaxMonthlySpend, l.WarnAtPercent, l.Action,
		at.UnixNano())
	if err != nil {
		return fmt.Errorf("store budget of team %s: %w", teamID, err)
	}
	return nil
}

// TeamsWithBudgets lists the teams that have at least one limit set.
func (s *Store) TeamsWithBudgets(ctx context.Context) ([]string, error) {
	teams, err := queryStrings(ctx, s.db, `SELECT team_id FROM budgets
		WHERE max_daily_spend > 0 OR max_monthly_spend > 0 OR max_concurrent > 0 OR max_daily_creates > 0`)
	if err != nil {
		return nil, fmt.Errorf("list budgets: %w", err)
	}
	return teams, nil
}

// RecordBudgetAlert notes that an alert of kind went out for the team in
// period; first is false when one already had.
func (s *Store) RecordBudgetAlert(ctx context.Context, teamID, kind, period string, at time.Time) (first bool, err error) {
	res, err := s.db.ExecContext(ctx, `INSERT INTO budget_alerts (team_id, kind, period, ts) VALUES (?,?,?,?)
		ON CONFLICT DO NOTHING`, teamID, kind, period, at.UnixNano())
	if err != nil {
		return false, fmt.Errorf("record budget alert: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// EventsSince counts the team's events of type eventType since since (a
// team's sandbox creates, for its daily limit).
func (s *Store) EventsSince(ctx context.Context, teamID, eventType string, since time.Time) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM events WHERE team_id = ? AND type = ? AND ts >= ?`,
		teamID, eventType, since.UnixNano()).Scan(&n); err != nil {
		return 0, fmt.Errorf("count %s events of team %s: %w", eventType, teamID, err)
	}
	return n, nil
}
