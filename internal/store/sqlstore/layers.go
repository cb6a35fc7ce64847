package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
)

var _ store.Layers = (*Store)(nil)

// SetLayers replaces the stack of (kind, id) in one transaction.
func (s *Store) SetLayers(ctx context.Context, kind, id string, layers []store.LayerRef, now time.Time) error {
	return s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM layer_blobs WHERE owner_kind = ? AND owner_id = ?`, kind, id); err != nil {
			return fmt.Errorf("record layers of %s %s: %w", kind, id, err)
		}
		for i, l := range layers {
			if _, err := tx.ExecContext(ctx, `INSERT INTO layer_blobs (owner_kind, owner_id, position, digest, size, path, created_at)
				VALUES (?, ?, ?, ?, ?, ?, ?)`, kind, id, i, l.Digest, l.Size, l.Path, ms(now)); err != nil {
				return fmt.Errorf("record layers of %s %s: %w", kind, id, err)
			}
		}
		return nil
	})
}

// Layers returns the stack of (kind, id), topmost first.
func (s *Store) Layers(ctx context.Context, kind, id string) ([]store.LayerRef, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT digest, size, path FROM layer_blobs
		WHERE owner_kind = ? AND owner_id = ? ORDER BY position`, kind, id)
	if err != nil {
		return nil, fmt.Errorf("read layers of %s %s: %w", kind, id, err)
	}
	defer rows.Close()
	var out []store.LayerRef
	for rows.Next() {
		var l store.LayerRef
		if err := rows.Scan(&l.Digest, &l.Size, &l.Path); err != nil {
			return nil, fmt.Errorf("read layers of %s %s: %w", kind, id, err)
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// DeleteLayers forgets the stack of (kind, id).
func (s *Store) DeleteLayers(ctx context.Context, kind, id string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM layer_blobs WHERE owner_kind = ? AND owner_id = ?`, kind, id); err != nil {
		return fmt.Errorf("forget layers of %s %s: %w", kind, id, err)
	}
	return nil
}

// LayerDigests lists every referenced digest once.
func (s *Store) LayerDigests(ctx context.Context) ([]string, error) {
	return queryStrings(ctx, s.db, `SELECT DISTINCT digest FROM layer_blobs WHERE digest != '' ORDER BY digest`)
}

// KeptLayerDigests lists the digests of stacks still in use, once each.
// Build IDs are compared as text: tpl_builds.finished_at is RFC 3339 in
// UTC, whose text order is time order to the second.
func (s *Store) KeptLayerDigests(ctx context.Context, recent time.Time) ([]string, error) {
	return queryStrings(ctx, s.db, `SELECT DISTINCT digest FROM layer_blobs WHERE digest != '' AND (
		(owner_kind != ? AND owner_id NOT IN (SELECT id FROM sandboxes WHERE state = ?))
		OR owner_id IN (SELECT current_build FROM tpl_templates)
		OR owner_id IN (SELECT build_id FROM tpl_tags)
		OR owner_id IN (SELECT build_id FROM sandboxes WHERE state != ?)
		OR owner_id IN (SELECT build_id FROM sandbox_snapshots)
		OR owner_id IN (SELECT id FROM tpl_builds WHERE finished_at = '' OR finished_at >= ?)
	) ORDER BY digest`, store.LayerOwnerBuild, store.StateKilled, store.StateKilled, tplTS(recent.Truncate(time.Second)))
}

// MoveSandbox hands a paused sandbox of node from to node to, in one
// conditional update: of two nodes claiming it, one finds it moved.
func (s *Store) MoveSandbox(ctx context.Context, id, from, to string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE sandboxes SET node_id = ? WHERE id = ? AND node_id = ? AND state = ?`,
		to, id, from, store.StatePaused)
	if err != nil {
		return fmt.Errorf("move sandbox %s to node %s: %w", id, to, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil
	}
	var state, node string
	err = s.db.QueryRowContext(ctx, `SELECT state, node_id FROM sandboxes WHERE id = ?`, id).Scan(&state, &node)
	if errors.Is(err, sql.ErrNoRows) {
		return errdefs.NotFound("sandbox %s not found", id)
	}
	if err != nil {
		return fmt.Errorf("move sandbox %s to node %s: %w", id, to, err)
	}
	return errdefs.Conflict("sandbox %s is %s on node %q now, not paused on node %q: another server resumed it first; retry", id, state, node, from)
}
