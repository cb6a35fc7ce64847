package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/sbxdev/sbx/internal/store"
)

// RecordSpawn counts one sandbox created from templateID at at.
func (s *Store) RecordSpawn(ctx context.Context, templateID string, at time.Time) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO template_spawns(template_id, spawn_count, last_spawned_at) VALUES(?, 1, ?)
		ON CONFLICT(template_id) DO UPDATE SET spawn_count = template_spawns.spawn_count + 1,
		last_spawned_at = CASE WHEN excluded.last_spawned_at > template_spawns.last_spawned_at
			THEN excluded.last_spawned_at ELSE template_spawns.last_spawned_at END`, templateID, unixNano(at))
	if err != nil {
		return fmt.Errorf("record spawn of template %s: %w", templateID, err)
	}
	return nil
}

// TemplateSpawns returns the spawn counts of every template used so far.
func (s *Store) TemplateSpawns(ctx context.Context) (map[string]store.TemplateSpawns, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT template_id, spawn_count, last_spawned_at FROM template_spawns`)
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
