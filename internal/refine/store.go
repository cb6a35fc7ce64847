package refine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	sbxstore "github.com/sbxdev/sbx/internal/store"
)

// Repository keeps refinements in the server's database so GET
// /refinements/{id} answers across restarts (sqlstore.Store implements
// it). Results are stored whole as JSON: they are written twice (start,
// end) and read by ID, never queried by field.
type Repository interface {
	// InsertRefinement stores a new refinement; false when its ID is taken.
	InsertRefinement(ctx context.Context, r sbxstore.Refinement) (bool, error)
	// UpdateRefinement replaces the team's refinement r.ID.
	UpdateRefinement(ctx context.Context, r sbxstore.Refinement) error
	// Refinement returns the team's refinement (errdefs.ErrNotFound if none).
	Refinement(ctx context.Context, teamID, id string) (sbxstore.Refinement, error)
	// RefinementsWithStatus lists every team's refinements in status.
	RefinementsWithStatus(ctx context.Context, status string) ([]sbxstore.Refinement, error)
}

// store adapts the repository to Result.
type store struct{ repo Repository }

// errDuplicate is returned by insert when the ID is taken.
var errDuplicate = errors.New("refinement ID already used")

func openStore(ctx context.Context, repo Repository) (*store, error) {
	s := &store{repo: repo}
	// A refinement that was running when the server stopped will never
	// finish: its loop lived in the old process.
	running, err := repo.RefinementsWithStatus(ctx, StatusRunning)
	if err != nil {
		return nil, fmt.Errorf("read unfinished refinements: %w", err)
	}
	for _, o := range running {
		var res Result
		if json.Unmarshal(o.Result, &res) != nil {
			continue
		}
		res.Status, res.Error = StatusFailed, "interrupted: the server stopped while this refinement was running"
		if res.FinishedAt.IsZero() {
			res.FinishedAt = time.Now().UTC()
		}
		if err := s.save(ctx, o.TeamID, &res); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func record(teamID string, r *Result) (sbxstore.Refinement, error) {
	raw, err := json.Marshal(r)
	if err != nil {
		return sbxstore.Refinement{}, err
	}
	return sbxstore.Refinement{ID: r.ID, TeamID: teamID, Status: r.Status, StartedAt: r.StartedAt, Result: raw}, nil
}

func (s *store) insert(ctx context.Context, teamID string, r *Result) error {
	rec, err := record(teamID, r)
	if err != nil {
		return err
	}
	ok, err := s.repo.InsertRefinement(ctx, rec)
	if err != nil {
		return err
	}
	if !ok {
		return errDuplicate
	}
	return nil
}

func (s *store) save(ctx context.Context, teamID string, r *Result) error {
	rec, err := record(teamID, r)
	if err != nil {
		return err
	}
	return s.repo.UpdateRefinement(ctx, rec)
}

// get returns nil, nil when the team has no refinement with that ID.
func (s *store) get(ctx context.Context, teamID, id string) (*Result, error) {
	rec, err := s.repo.Refinement(ctx, teamID, id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(rec.Result, &r); err != nil {
		return nil, fmt.Errorf("decode refinement %s: %w", id, err)
	}
	return &r, nil
}
