package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
)

const teamColumns = `id, name, created_at, max_sandboxes`

// CreateTeam creates a team and its first API key, named "default".
func (s *Store) CreateTeam(ctx context.Context, name, apiKey string) (store.Team, error) {
	t := store.Team{ID: uuid.NewString(), Name: name, CreatedAt: s.now().UTC()}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return store.Team{}, fmt.Errorf("create team: %w", err)
	}
	defer tx.Rollback()
	_, err = tx.ExecContext(ctx, `INSERT INTO teams(id, name, created_at) VALUES(?,?,?)`,
		t.ID, t.Name, t.CreatedAt.UnixNano())
	if err != nil {
		if sqldb.IsUniqueViolation(err) {
			return store.Team{}, errdefs.Exists("team %q already exists; pick another name", name)
		}
		return store.Team{}, fmt.Errorf("create team %s: %w", name, err)
	}
	if _, err := insertKey(ctx, tx, t.ID, "default", apiKey, t.CreatedAt); err != nil {
		return store.Team{}, fmt.Errorf("create api key for team %s: %w", name, err)
	}
	return t, tx.Commit()
}

// TeamByAPIKey resolves a team's API key to its team.
func (s *Store) TeamByAPIKey(ctx context.Context, apiKey string) (store.Team, error) {
	row := s.db.QueryRowContext(ctx, `SELECT t.id, t.name, t.created_at, t.max_sandboxes FROM api_keys k
		JOIN teams t ON t.id = k.team_id WHERE k.hash = ?`, HashKey(apiKey))
	return scanTeam(row, "API key")
}

// TeamByName finds a team by name.
func (s *Store) TeamByName(ctx context.Context, name string) (store.Team, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+teamColumns+` FROM teams WHERE name = ?`, name)
	return scanTeam(row, "team "+name)
}

// Team finds a team by ID.
func (s *Store) Team(ctx context.Context, id string) (store.Team, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+teamColumns+` FROM teams WHERE id = ?`, id)
	return scanTeam(row, "team "+id)
}

// Teams lists every team, oldest first.
func (s *Store) Teams(ctx context.Context) ([]store.Team, error) {
	return queryAll(ctx, s.db, "list teams", func(r scanner) (store.Team, error) { return scanTeam(r, "team") },
		`SELECT `+teamColumns+` FROM teams ORDER BY created_at`)
}

// SetTeamMaxSandboxes sets or clears (nil) a team's cap override.
func (s *Store) SetTeamMaxSandboxes(ctx context.Context, teamID string, max *int) error {
	var v any
	if max != nil {
		v = *max
	}
	res, err := s.db.ExecContext(ctx, `UPDATE teams SET max_sandboxes = ? WHERE id = ?`, v, teamID)
	if err != nil {
		return fmt.Errorf("set max sandboxes of team %s: %w", teamID, err)
	}
	return oneRow(res, "team "+teamID)
}

// DeleteTeam deletes a team and its keys in one transaction.
func (s *Store) DeleteTeam(ctx context.Context, teamID string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("delete team: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM api_keys WHERE team_id = ?`, teamID); err != nil {
		return fmt.Errorf("delete keys of team %s: %w", teamID, err)
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM teams WHERE id = ?`, teamID)
	if err != nil {
		return fmt.Errorf("delete team %s: %w", teamID, err)
	}
	if err := oneRow(res, "team "+teamID); err != nil {
		return err
	}
	if err := tx.Notify(ctx, store.KeysChannel); err != nil {
		return fmt.Errorf("delete team %s: %w", teamID, err)
	}
	return tx.Commit()
}

type scanner interface{ Scan(...any) error }

func scanTeam(row scanner, what string) (store.Team, error) {
	var t store.Team
	var created int64
	var max sql.NullInt64
	if err := row.Scan(&t.ID, &t.Name, &created, &max); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return store.Team{}, errdefs.NotFound("%s not found", what)
		}
		return store.Team{}, fmt.Errorf("read %s: %w", what, err)
	}
	t.CreatedAt = time.Unix(0, created).UTC()
	if max.Valid {
		n := int(max.Int64)
		t.MaxSandboxes = &n
	}
	return t, nil
}

// oneRow turns an UPDATE or DELETE that matched nothing into ErrNotFound.
func oneRow(res sql.Result, what string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n == 0 {
		return errdefs.NotFound("%s not found", what)
	}
	return nil
}
