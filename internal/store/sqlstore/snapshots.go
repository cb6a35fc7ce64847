package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
)

var _ store.Snapshots = (*Store)(nil)

const snapshotCols = `id, team_id, name, sandbox_id, base_template, build_id, template, memory_node, size_bytes, created_at`

// PutSnapshot writes the row and its layer stack in one transaction, so
// no server sees a snapshot without its layers.
func (s *Store) PutSnapshot(ctx context.Context, sn store.Snapshot) error {
	err := s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM sandbox_snapshots WHERE id = ?`, sn.ID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO sandbox_snapshots (`+snapshotCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			sn.ID, sn.TeamID, sn.Name, sn.SandboxID, sn.BaseTemplate, sn.BuildID, string(sn.Template), sn.MemoryNode,
			sn.SizeBytes, ms(sn.CreatedAt)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM layer_blobs WHERE owner_kind = ? AND owner_id = ?`, store.LayerOwnerSnapshot, sn.ID); err != nil {
			return err
		}
		for i, l := range sn.Layers {
			if _, err := tx.ExecContext(ctx, `INSERT INTO layer_blobs (owner_kind, owner_id, position, digest, size, path, created_at)
				VALUES (?, ?, ?, ?, ?, ?, ?)`, store.LayerOwnerSnapshot, sn.ID, i, l.Digest, l.Size, l.Path, ms(sn.CreatedAt)); err != nil {
				return err
			}
		}
		return nil
	})
	if sqldb.IsUniqueViolation(err) {
		return errdefs.Exists("the snapshot name %q is taken", sn.Name)
	}
	if err != nil {
		return fmt.Errorf("record snapshot %s: %w", sn.ID, err)
	}
	return nil
}

func scanSnapshot(sc interface{ Scan(...any) error }) (store.Snapshot, error) {
	var sn store.Snapshot
	var tpl string
	var created int64
	err := sc.Scan(&sn.ID, &sn.TeamID, &sn.Name, &sn.SandboxID, &sn.BaseTemplate, &sn.BuildID, &tpl, &sn.MemoryNode,
		&sn.SizeBytes, &created)
	sn.Template, sn.CreatedAt = []byte(tpl), fromMS(created)
	return sn, err
}

// Snapshot reads one by ID, with its layers.
func (s *Store) Snapshot(ctx context.Context, id string) (store.Snapshot, error) {
	return s.snapshotWhere(ctx, `id = ?`, id)
}

// SnapshotByName reads one by name, with its layers.
func (s *Store) SnapshotByName(ctx context.Context, name string) (store.Snapshot, error) {
	if name == "" {
		return store.Snapshot{}, errdefs.NotFound("snapshot %q not found", name)
	}
	return s.snapshotWhere(ctx, `name = ?`, name)
}

func (s *Store) snapshotWhere(ctx context.Context, where, arg string) (store.Snapshot, error) {
	sn, err := scanSnapshot(s.db.QueryRowContext(ctx, `SELECT `+snapshotCols+` FROM sandbox_snapshots WHERE `+where, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Snapshot{}, errdefs.NotFound("snapshot %q not found", arg)
	}
	if err != nil {
		return store.Snapshot{}, fmt.Errorf("read snapshot %s: %w", arg, err)
	}
	if sn.Layers, err = s.Layers(ctx, store.LayerOwnerSnapshot, sn.ID); err != nil {
		return store.Snapshot{}, err
	}
	return sn, nil
}

// ListSnapshots lists a team's snapshots ("" = all), newest first.
func (s *Store) ListSnapshots(ctx context.Context, teamID string) ([]store.Snapshot, error) {
	q := `SELECT ` + snapshotCols + ` FROM sandbox_snapshots`
	var args []any
	if teamID != "" {
		q += ` WHERE team_id = ?`
		args = append(args, teamID)
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY created_at DESC, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	defer rows.Close()
	var out []store.Snapshot
	for rows.Next() {
		sn, err := scanSnapshot(rows)
		if err != nil {
			return nil, fmt.Errorf("list snapshots: %w", err)
		}
		out = append(out, sn)
	}
	return out, rows.Err()
}

// DeleteSnapshot removes a team's snapshot and its layer stack.
func (s *Store) DeleteSnapshot(ctx context.Context, teamID, id string) error {
	return s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM sandbox_snapshots WHERE id = ? AND team_id = ?`, id, teamID)
		if err != nil {
			return fmt.Errorf("delete snapshot %s: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errdefs.NotFound("snapshot %s not found", id)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM layer_blobs WHERE owner_kind = ? AND owner_id = ?`, store.LayerOwnerSnapshot, id); err != nil {
			return fmt.Errorf("delete snapshot %s: %w", id, err)
		}
		return nil
	})
}
