package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
)

// slotLockSpace is the first key of the per-team advisory locks taken
// around a slot reservation ("sbxs" in ASCII).
const slotLockSpace = 0x73627873

// ReserveSlot takes one of team's sandbox slots for a create on node if
// the team holds fewer than limit across every server sharing the
// database: its sandboxes not killed plus the unexpired reservations of
// creates in flight. Count and insert happen under a per-team lock (a
// transaction-scoped advisory lock on PostgreSQL, the write lock on
// SQLite), so two servers never both take the last slot. ok is false, with
// held the team's count, when the team is at its limit; limit 0 means no
// cap. The reservation expires after ttl if nobody releases it (its server
// died).
func (s *Store) ReserveSlot(ctx context.Context, teamID, node string, limit int, ttl time.Duration) (id string, held int, ok bool, err error) {
	now := s.now()
	id = uuid.NewString()
	err = s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		if tx.Dialect() == sqldb.Postgres {
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?, hashtext(?))`, slotLockSpace, teamID); err != nil {
				return fmt.Errorf("lock team %s: %w", teamID, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM sandbox_slots WHERE team_id = ? AND expires_at <= ?`, teamID, now.UnixNano()); err != nil {
			return fmt.Errorf("expire slots: %w", err)
		}
		if err := tx.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM sandboxes WHERE team_id = ? AND state != ?)
			+ (SELECT COUNT(*) FROM sandbox_slots WHERE team_id = ?)`, teamID, string(store.StateKilled), teamID).Scan(&held); err != nil {
			return fmt.Errorf("count team %s sandboxes: %w", teamID, err)
		}
		if limit > 0 && held >= limit {
			return nil
		}
		ok = true
		_, err := tx.ExecContext(ctx, `INSERT INTO sandbox_slots (id, team_id, node_id, expires_at) VALUES (?, ?, ?, ?)`,
			id, teamID, node, now.Add(ttl).UnixNano())
		return err
	})
	if err != nil || !ok {
		return "", held, false, err
	}
	return id, held, true, nil
}

// ReleaseSlot gives a reservation back (a no-op if it expired).
func (s *Store) ReleaseSlot(ctx context.Context, id string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM sandbox_slots WHERE id = ?`, id); err != nil {
		return fmt.Errorf("release slot %s: %w", id, err)
	}
	return nil
}
