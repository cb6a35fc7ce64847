package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/secret"
	"github.com/sbxdev/sbx/internal/store/sqldb"
)

var _ secret.Repository = (*Secrets)(nil)

// Secrets stores sealed team secrets (table secrets).
type Secrets struct{ db *sqldb.DB }

// NewSecrets returns the repository over db.
func NewSecrets(db *sqldb.DB) *Secrets { return &Secrets{db: db} }

const secretColumns = `id, team_id, name, metadata, version, ciphertext, created_at, updated_at`

// refWhere selects by ID (sec_...) or by name.
func refWhere(ref string) string {
	if strings.HasPrefix(ref, "sec_") {
		return "team_id = ? AND id = ?"
	}
	return "team_id = ? AND name = ?"
}

// Insert stores a new secret; a taken name is errdefs.ErrAlreadyExists.
func (s *Secrets) Insert(ctx context.Context, x secret.Sealed) error {
	md, _ := json.Marshal(x.Metadata)
	_, err := s.db.ExecContext(ctx, `INSERT INTO secrets(`+secretColumns+`) VALUES(?,?,?,?,?,?,?,?)`,
		x.ID, x.TeamID, x.Name, string(md), x.Version, x.Ciphertext, x.CreatedAt.UnixNano(), x.UpdatedAt.UnixNano())
	if sqldb.IsUniqueViolation(err) {
		return errdefs.Exists("a secret named %q already exists in your team", x.Name)
	}
	if err != nil {
		return fmt.Errorf("store secret: %w", err)
	}
	return nil
}

// Update replaces the value, version and metadata of a secret, only if
// its version is still the one before (two concurrent updates: one wins,
// the other is refused).
func (s *Secrets) Update(ctx context.Context, x secret.Sealed) error {
	md, _ := json.Marshal(x.Metadata)
	res, err := s.db.ExecContext(ctx, `UPDATE secrets SET metadata = ?, version = ?, ciphertext = ?, updated_at = ?
		WHERE team_id = ? AND id = ? AND version = ?`,
		string(md), x.Version, x.Ciphertext, x.UpdatedAt.UnixNano(), x.TeamID, x.ID, x.Version-1)
	if err != nil {
		return fmt.Errorf("update secret %s: %w", x.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errdefs.Conflict("secret %s changed meanwhile; try again", x.ID)
	}
	return nil
}

// Get returns one of the team's secrets by ID or name.
func (s *Secrets) Get(ctx context.Context, teamID, ref string) (secret.Sealed, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+secretColumns+` FROM secrets WHERE `+refWhere(ref), teamID, ref)
	x, err := scanSecret(row)
	if errors.Is(err, sql.ErrNoRows) {
		return x, errdefs.NotFound("secret %q not found", ref)
	}
	return x, err
}

// Newest returns the secret of any team written last
// (secret.Service.CheckKey); errdefs.ErrNotFound when there is none.
func (s *Secrets) Newest(ctx context.Context) (secret.Sealed, error) {
	x, err := scanSecret(s.db.QueryRowContext(ctx, `SELECT `+secretColumns+` FROM secrets ORDER BY updated_at DESC, id LIMIT 1`))
	if errors.Is(err, sql.ErrNoRows) {
		return x, errdefs.NotFound("no secrets stored")
	}
	return x, err
}

// List returns the team's secrets ordered by name, after the name after.
func (s *Secrets) List(ctx context.Context, teamID, after string, limit int) ([]secret.Secret, error) {
	return queryAll(ctx, s.db, "list secrets", func(r scanner) (secret.Secret, error) {
		x, err := scanSecret(r)
		return x.Secret, err
	}, `SELECT `+secretColumns+` FROM secrets WHERE team_id = ? AND name > ? ORDER BY name LIMIT ?`, teamID, after, limit)
}

// Delete removes one of the team's secrets by ID or name.
func (s *Secrets) Delete(ctx context.Context, teamID, ref string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM secrets WHERE `+refWhere(ref), teamID, ref)
	if err != nil {
		return fmt.Errorf("delete secret: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errdefs.NotFound("secret %q not found", ref)
	}
	return nil
}

func scanSecret(row scanner) (secret.Sealed, error) {
	var x secret.Sealed
	var md string
	var created, updated int64
	if err := row.Scan(&x.ID, &x.TeamID, &x.Name, &md, &x.Version, &x.Ciphertext, &created, &updated); err != nil {
		return x, err
	}
	_ = json.Unmarshal([]byte(md), &x.Metadata)
	if x.Metadata == nil {
		x.Metadata = map[string]string{}
	}
	x.CreatedAt, x.UpdatedAt = time.Unix(0, created).UTC(), time.Unix(0, updated).UTC()
	return x, nil
}
