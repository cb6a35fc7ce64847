package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
)

// The refinements repository (package refine's Repository): a refinement
// is kept whole as a JSON document, written at its start and end and read
// by ID, never queried by field.

// InsertRefinement stores a new refinement; inserted is false when its ID
// is taken.
func (s *Store) InsertRefinement(ctx context.Context, r store.Refinement) (inserted bool, err error) {
	res, err := s.db.ExecContext(ctx, `INSERT INTO refinements (id, team_id, status, started_at, result)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
		r.ID, r.TeamID, r.Status, r.StartedAt.Format(time.RFC3339Nano), string(r.Result))
	if err != nil {
		return false, fmt.Errorf("save refinement %s: %w", r.ID, err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// UpdateRefinement replaces the status and document of the team's
// refinement r.ID.
func (s *Store) UpdateRefinement(ctx context.Context, r store.Refinement) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE refinements SET status = ?, result = ? WHERE id = ? AND team_id = ?`,
		r.Status, string(r.Result), r.ID, r.TeamID); err != nil {
		return fmt.Errorf("save refinement %s: %w", r.ID, err)
	}
	return nil
}

// Refinement returns the team's refinement id (store.ErrNotFound if none).
func (s *Store) Refinement(ctx context.Context, teamID, id string) (store.Refinement, error) {
	r := store.Refinement{ID: id, TeamID: teamID}
	var doc, started string
	err := s.db.QueryRowContext(ctx, `SELECT status, started_at, result FROM refinements WHERE id = ? AND team_id = ?`, id, teamID).
		Scan(&r.Status, &started, &doc)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Refinement{}, errdefs.NotFound("refinement %s not found", id)
	}
	if err != nil {
		return store.Refinement{}, fmt.Errorf("read refinement %s: %w", id, err)
	}
	r.StartedAt, _ = time.Parse(time.RFC3339Nano, started)
	r.Result = []byte(doc)
	return r, nil
}

// RefinementsWithStatus lists every team's refinements in status.
func (s *Store) RefinementsWithStatus(ctx context.Context, status string) ([]store.Refinement, error) {
	return queryAll(ctx, s.db, "list refinements", func(row scanner) (store.Refinement, error) {
		r := store.Refinement{Status: status}
		var doc, started string
		err := row.Scan(&r.ID, &r.TeamID, &started, &doc)
		r.StartedAt, _ = time.Parse(time.RFC3339Nano, started)
		r.Result = []byte(doc)
		return r, err
	}, `SELECT id, team_id, started_at, result FROM refinements WHERE status = ?`, status)
}
