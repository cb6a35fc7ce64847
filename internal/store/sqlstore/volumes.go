package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/volume"
)

var _ volume.Repository = (*Volumes)(nil)

// Volumes stores team volumes (table volumes).
type Volumes struct{ db *sqldb.DB }

// NewVolumes returns the repository over db.
func NewVolumes(db *sqldb.DB) *Volumes { return &Volumes{db: db} }

const volumeColumns = `id, team_id, name, token, size_mb, created_at, node_id`

// Insert stores a new volume; a taken name is errdefs.ErrAlreadyExists.
func (v *Volumes) Insert(ctx context.Context, x volume.Volume) error {
	_, err := v.db.ExecContext(ctx, `INSERT INTO volumes(`+volumeColumns+`) VALUES(?,?,?,?,?,?,?)`,
		x.ID, x.TeamID, x.Name, x.Token, x.SizeMB, x.CreatedAt.UnixNano(), x.NodeID)
	if sqldb.IsUniqueViolation(err) {
		return errdefs.Exists("a volume named %q already exists in your team", x.Name)
	}
	if err != nil {
		return fmt.Errorf("store volume: %w", err)
	}
	return nil
}

// Get returns one of the team's volumes by ID (vol_...) or name.
func (v *Volumes) Get(ctx context.Context, teamID, ref string) (volume.Volume, error) {
	col := "name"
	if strings.HasPrefix(ref, volume.IDPrefix) {
		col = "id"
	}
	return v.one(ctx, `SELECT `+volumeColumns+` FROM volumes WHERE team_id = ? AND `+col+` = ?`, ref, teamID, ref)
}

// ByID returns a volume whatever its team (the content API authorizes by
// the volume's own token).
func (v *Volumes) ByID(ctx context.Context, id string) (volume.Volume, error) {
	return v.one(ctx, `SELECT `+volumeColumns+` FROM volumes WHERE id = ?`, id, id)
}

func (v *Volumes) one(ctx context.Context, q, ref string, args ...any) (volume.Volume, error) {
	x, err := scanVolume(v.db.QueryRowContext(ctx, q, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return x, errdefs.NotFound("volume %q not found", ref)
	}
	return x, err
}

// List returns the team's volumes by name.
func (v *Volumes) List(ctx context.Context, teamID string) ([]volume.Volume, error) {
	return queryAll(ctx, v.db, "list volumes", scanVolume, `SELECT `+volumeColumns+` FROM volumes WHERE team_id = ? ORDER BY name`, teamID)
}

// Delete removes one of the team's volumes.
func (v *Volumes) Delete(ctx context.Context, teamID, id string) error {
	res, err := v.db.ExecContext(ctx, `DELETE FROM volumes WHERE team_id = ? AND id = ?`, teamID, id)
	if err != nil {
		return fmt.Errorf("delete volume: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errdefs.NotFound("volume %q not found", id)
	}
	return nil
}

func scanVolume(row scanner) (volume.Volume, error) {
	var x volume.Volume
	var created int64
	err := row.Scan(&x.ID, &x.TeamID, &x.Name, &x.Token, &x.SizeMB, &created, &x.NodeID)
	x.CreatedAt = time.Unix(0, created).UTC()
	return x, err
}
