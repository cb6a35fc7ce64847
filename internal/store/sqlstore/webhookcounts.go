package sqlstore

import (
	"context"
	"fmt"

	"github.com/sbxdev/sbx/internal/store"
)

// WebhookDeliveryCounts counts webhook deliveries by team and state (the
// metrics' webhook collector).
func (s *Store) WebhookDeliveryCounts(ctx context.Context) ([]store.Count, error) {
	return s.counts(ctx, `SELECT team_id, state, COUNT(*) FROM webhook_deliveries GROUP BY team_id, state`)
}

// WebhookAttemptCounts counts webhook attempts by team and status.
// Attempts name their webhook, whose team owns them; those of a deleted
// webhook count under team "".
func (s *Store) WebhookAttemptCounts(ctx context.Context) ([]store.Count, error) {
	return s.counts(ctx, `SELECT COALESCE(w.team_id, ''), a.status, COUNT(*) FROM webhook_attempts a
		 LEFT JOIN webhooks w ON w.id = a.webhook_id GROUP BY 1, 2`)
}

func (s *Store) counts(ctx context.Context, q string) ([]store.Count, error) {
	rows, err := s.db.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("count: %w", err)
	}
	defer rows.Close()
	var out []store.Count
	for rows.Next() {
		var c store.Count
		if err := rows.Scan(&c.Team, &c.Label, &c.N); err != nil {
			return nil, fmt.Errorf("count: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
