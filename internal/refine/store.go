package refine

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sbxdev/sbx/internal/store/sqldb"
)

// store keeps refinements in the server's database (table refinements) so GET /refinements/{id} answers across restarts. Results are
// stored whole as JSON: they are written twice (start, end) and read by ID,
// never queried by field.
type store struct{ db *sqldb.DB }

// errDuplicate is returned by insert when the ID is taken.
var errDuplicate = errors.New("refinement ID already used")

func openStore(ctx context.Context, db *sqldb.DB) (*store, error) {
	s := &store{db: db}
	// A refinement that was running when the server stopped will never
	// finish: its loop lived in the old process.
	rows, err := db.QueryContext(ctx, `SELECT team_id, result FROM refinements WHERE status = ?`, StatusRunning)
	if err != nil {
		return nil, fmt.Errorf("read unfinished refinements: %w", err)
	}
	type orphan struct {
		team string
		res  Result
	}
	var orphans []orphan
	for rows.Next() {
		var o orphan
		var raw string
		if err := rows.Scan(&o.team, &raw); err != nil {
			rows.Close()
			return nil, err
		}
		if json.Unmarshal([]byte(raw), &o.res) == nil {
			orphans = append(orphans, o)
		}
	}
	rows.Close()
	for _, o := range orphans {
		o.res.Status, o.res.Error = StatusFailed, "interrupted: the server stopped while this refinement was running"
		if o.res.FinishedAt.IsZero() {
			o.res.FinishedAt = time.Now().UTC()
		}
		if err := s.save(ctx, o.team, &o.res); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *store) insert(ctx context.Context, teamID string, r *Result) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO refinements (id, team_id, status, started_at, result)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
		r.ID, teamID, r.Status, r.StartedAt.Format(time.RFC3339Nano), string(raw))
	if err != nil {
		return fmt.Errorf("save refinement %s: %w", r.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errDuplicate
	}
	return nil
}

func (s *store) save(ctx context.Context, teamID string, r *Result) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE refinements SET status = ?, result = ? WHERE id = ? AND team_id = ?`,
		r.Status, string(raw), r.ID, teamID); err != nil {
		return fmt.Errorf("save refinement %s: %w", r.ID, err)
	}
	return nil
}

// get returns nil, nil when the team has no refinement with that ID.
func (s *store) get(ctx context.Context, teamID, id string) (*Result, error) {
	var raw string
	err := s.db.QueryRowContext(ctx, `SELECT result FROM refinements WHERE id = ? AND team_id = ?`, id, teamID).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read refinement %s: %w", id, err)
	}
	var r Result
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return nil, fmt.Errorf("decode refinement %s: %w", id, err)
	}
	return &r, nil
}
