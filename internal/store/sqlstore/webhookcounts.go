package sqlstore

import (
	"context"

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
	return queryAll(ctx, s.db, "count", func(r scanner) (c store.Count, err error) {
		return c, r.Scan(&c.Team, &c.Label, &c.N)
	}, q)
}
