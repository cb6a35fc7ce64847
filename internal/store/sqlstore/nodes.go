package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
)

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// Heartbeat upserts the node's row. A lost node's row changes only for a
// new boot: the boot that was declared lost is fenced.
func (s *Store) Heartbeat(ctx context.Context, n store.Node) error {
	return s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		var boot, state string
		err := tx.QueryRowContext(ctx, `SELECT boot, state FROM nodes WHERE id = ?`+forUpdate(tx), n.ID).Scan(&boot, &state)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			_, err = tx.ExecContext(ctx, `INSERT INTO nodes (id, boot, address, state, started_at, heartbeat_at,
				advertise_url, cpu_millis, memory_mib, reserved_cpu_millis, reserved_memory_mib, sandboxes, builds, pooled)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				n.ID, n.Boot, n.Address, store.BeatState(n), ms(n.StartedAt), ms(n.HeartbeatAt),
				n.AdvertiseURL, n.CPUMillis, n.MemoryMiB, n.ReservedCPUMillis, n.ReservedMemoryMiB, n.Sandboxes, n.Builds, n.Pooled)
			if err != nil {
				return fmt.Errorf("register node %s: %w", n.ID, err)
			}
			return nil
		case err != nil:
			return fmt.Errorf("heartbeat of node %s: %w", n.ID, err)
		case state == store.NodeLost && boot == n.Boot:
			return store.ErrFenced
		}
		_, err = tx.ExecContext(ctx, `UPDATE nodes SET boot = ?, address = ?, state = ?, started_at = ?, heartbeat_at = ?, lost_at = 0,
			advertise_url = ?, cpu_millis = ?, memory_mib = ?, reserved_cpu_millis = ?, reserved_memory_mib = ?, sandboxes = ?, builds = ?, pooled = ? WHERE id = ?`,
			n.Boot, n.Address, store.BeatState(n), ms(n.StartedAt), ms(n.HeartbeatAt),
			n.AdvertiseURL, n.CPUMillis, n.MemoryMiB, n.ReservedCPUMillis, n.ReservedMemoryMiB, n.Sandboxes, n.Builds, n.Pooled, n.ID)
		if err != nil {
			return fmt.Errorf("heartbeat of node %s: %w", n.ID, err)
		}
		return nil
	})
}

// forUpdate locks the row read on PostgreSQL (SQLite's write transaction
// holds the database).
func forUpdate(tx *sqldb.Tx) string {
	if tx.Dialect() == sqldb.Postgres {
		return " FOR UPDATE"
	}
	return ""
}

// Nodes lists every node, by ID.
func (s *Store) Nodes(ctx context.Context) ([]store.Node, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, boot, address, state, started_at, heartbeat_at, lost_at,
		advertise_url, cpu_millis, memory_mib, reserved_cpu_millis, reserved_memory_mib, sandboxes, builds, pooled FROM nodes ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	var out []store.Node
	for rows.Next() {
		var n store.Node
		var started, beat, lost int64
		if err := rows.Scan(&n.ID, &n.Boot, &n.Address, &n.State, &started, &beat, &lost,
			&n.AdvertiseURL, &n.CPUMillis, &n.MemoryMiB, &n.ReservedCPUMillis, &n.ReservedMemoryMiB, &n.Sandboxes, &n.Builds, &n.Pooled); err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		n.StartedAt, n.HeartbeatAt, n.LostAt = fromMS(started), fromMS(beat), fromMS(lost)
		out = append(out, n)
	}
	return out, rows.Err()
}

// MarkLost declares lost the ready and draining nodes whose heartbeat is too old.
func (s *Store) MarkLost(ctx context.Context, staleBefore, now time.Time) ([]string, error) {
	var lost []string
	err := s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		lost = nil
		rows, err := tx.QueryContext(ctx, `SELECT id FROM nodes WHERE state IN (?, ?) AND heartbeat_at < ?`+forUpdate(tx),
			store.NodeReady, store.NodeDraining, ms(staleBefore))
		if err != nil {
			return err
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			lost = append(lost, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, id := range lost {
			if _, err := tx.ExecContext(ctx, `UPDATE nodes SET state = ?, lost_at = ? WHERE id = ?`, store.NodeLost, ms(now), id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("mark lost nodes: %w", err)
	}
	return lost, nil
}

// LostNodes lists the IDs of lost nodes.
func (s *Store) LostNodes(ctx context.Context) ([]string, error) {
	ids, err := queryStrings(ctx, s.db, `SELECT id FROM nodes WHERE state = ? ORDER BY id`, store.NodeLost)
	if err != nil {
		return nil, fmt.Errorf("list lost nodes: %w", err)
	}
	return ids, nil
}

// queryStrings runs a one-column query.
func queryStrings(ctx context.Context, db *sqldb.DB, q string, args ...any) ([]string, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
