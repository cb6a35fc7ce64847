package sqlstore

import (
	"context"
	"fmt"

	"github.com/sbxdev/sbx/internal/store"
)

// TemplateSpawns returns the spawn counts of every template used so far.
func (s *Store) TemplateSpawns(ctx context.Context) (map[string]store.TemplateSpawns, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT template_id, COUNT(*), MAX(started_at) FROM sandboxes GROUP BY template_id`)
	if err != nil {
		return nil, fmt.Errorf("read template spawns: %w", err)
	}
	defer rows.Close()
	out := map[string]store.TemplateSpawns{}
	for rows.Next() {
		var id string
		var n, last int64
		if err := rows.Scan(&id, &n, &last); err != nil {
			return nil, fmt.Errorf("read template spawns: %w", err)
		}
		out[id] = store.TemplateSpawns{Count: n, Last: fromNano(last)}
	}
	return out, rows.Err()
}
