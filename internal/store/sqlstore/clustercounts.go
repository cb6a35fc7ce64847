package sqlstore

import (
	"context"
	"fmt"

	"github.com/sbxdev/sbx/internal/store"
)

// ClusterCounts counts, over every node and team, the sandboxes running
// and paused and the template builds queued for a node to claim (an api
// replica's /metrics): two aggregate queries, no rows sent.
func (s *Store) ClusterCounts(ctx context.Context) (running, paused, queuedBuilds int, err error) {
	rows, err := s.db.QueryContext(ctx, `SELECT state, COUNT(*) FROM sandboxes WHERE state IN (?, ?) GROUP BY state`,
		string(store.StateRunning), string(store.StatePaused))
	if err != nil {
		return 0, 0, 0, fmt.Errorf("count the cluster's sandboxes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var state string
		var n int
		if err := rows.Scan(&state, &n); err != nil {
			return 0, 0, 0, fmt.Errorf("count the cluster's sandboxes: %w", err)
		}
		if state == string(store.StatePaused) {
			paused = n
		} else {
			running = n
		}
	}
	if err := rows.Err(); err != nil {
		return 0, 0, 0, fmt.Errorf("count the cluster's sandboxes: %w", err)
	}
	err = s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM tpl_builds WHERE status = 'building' AND job_state = ?`, store.JobQueued).Scan(&queuedBuilds)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("count the queued builds: %w", err)
	}
	return running, paused, queuedBuilds, nil
}
