package template

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store/sqldb"
)

// Store persists user templates and builds (tables tpl_*).
type Store struct{ db *sqldb.DB }

// NewStore returns a store over db (opened, so migrated, by sqldb.Open).
func NewStore(db *sqldb.DB) *Store { return &Store{db: db} }

// Record is a user template row.
type Record struct {
	ID           string
	TeamID       string
	Names        []string
	Public       bool
	CPUCount     int
	MemoryMB     int
	DiskMB       int
	CurrentBuild string // "" until the first build succeeded
	BuildCount   int
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// BuildRecord is one build of a template.
type BuildRecord struct {
	ID         string
	TemplateID string
	Status     string
	Reason     string
	ReasonStep string
	Request    json.RawMessage // the start request as received
	Result     BuildResult
	Tags       []string // tags it gets when it becomes ready
	CreatedAt  time.Time
	FinishedAt time.Time
}

// BuildResult is what a finished build needs to be registered again after
// a restart.
type BuildResult struct {
	Layers   []string          `json:"layers,omitempty"`
	User     string            `json:"user,omitempty"`
	Workdir  string            `json:"workdir,omitempty"`
	Env      map[string]string `json:"env,omitempty"`
	StartCmd string            `json:"startCmd,omitempty"`
	ReadyCmd string            `json:"readyCmd,omitempty"`
	// ContentKey is the builder's cache key of the final filesystem.
	ContentKey string `json:"contentKey,omitempty"`
}

// LogEntry is one build log line.
type LogEntry struct {
	Timestamp time.Time `json:"timestamp"`
	Message   string    `json:"message"`
	Level     string    `json:"level"`
	Step      string    `json:"step,omitempty"`
}

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func parseTS(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

// CreateTemplate inserts a template row.
func (s *Store) CreateTemplate(ctx context.Context, r Record) error {
	names, _ := json.Marshal(r.Names)
	_, err := s.db.ExecContext(ctx, `INSERT INTO tpl_templates
		(id, team_id, names, public, cpu_count, memory_mb, disk_mb, current_build, build_count, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.TeamID, string(names), r.Public, r.CPUCount, r.MemoryMB, r.DiskMB, r.CurrentBuild, r.BuildCount,
		ts(r.CreatedAt), ts(r.UpdatedAt))
	if err != nil {
		return fmt.Errorf("insert template %s: %w", r.ID, err)
	}
	return nil
}

// UpdateTemplate stores a template's resources, names and current build.
func (s *Store) UpdateTemplate(ctx context.Context, r Record) error {
	names, _ := json.Marshal(r.Names)
	_, err := s.db.ExecContext(ctx, `UPDATE tpl_templates SET names = ?, public = ?, cpu_count = ?, memory_mb = ?,
		disk_mb = ?, current_build = ?, build_count = ?, updated_at = ? WHERE id = ?`,
		string(names), r.Public, r.CPUCount, r.MemoryMB, r.DiskMB, r.CurrentBuild, r.BuildCount, ts(r.UpdatedAt), r.ID)
	if err != nil {
		return fmt.Errorf("update template %s: %w", r.ID, err)
	}
	return nil
}

// DeleteTemplate removes a template and its build logs. Its build rows stay:
// sandboxes (running or paused) may still use their layers, and pruning
// needs to know which layers those are.
func (s *Store) DeleteTemplate(ctx context.Context, id string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, q := range []string{
		`DELETE FROM tpl_build_logs WHERE build_id IN (SELECT id FROM tpl_builds WHERE template_id = ?)`,
		`DELETE FROM tpl_tags WHERE template_id = ?`,
		`DELETE FROM tpl_templates WHERE id = ?`,
	} {
		if _, err := tx.ExecContext(ctx, q, id); err != nil {
			return fmt.Errorf("delete template %s: %w", id, err)
		}
	}
	return tx.Commit()
}

const templateCols = `id, team_id, names, public, cpu_count, memory_mb, disk_mb, current_build, build_count, created_at, updated_at`

func scanTemplate(sc interface{ Scan(...any) error }) (Record, error) {
	var r Record
	var names, created, updated string
	err := sc.Scan(&r.ID, &r.TeamID, &names, &r.Public, &r.CPUCount, &r.MemoryMB, &r.DiskMB, &r.CurrentBuild,
		&r.BuildCount, &created, &updated)
	if err != nil {
		return r, err
	}
	_ = json.Unmarshal([]byte(names), &r.Names)
	r.CreatedAt, r.UpdatedAt = parseTS(created), parseTS(updated)
	return r, nil
}

// Template returns a template row by ID.
func (s *Store) Template(ctx context.Context, id string) (Record, error) {
	r, err := scanTemplate(s.db.QueryRowContext(ctx, `SELECT `+templateCols+` FROM tpl_templates WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return r, errdefs.NotFound("template %q not found", id)
	}
	if err != nil {
		return r, fmt.Errorf("read template %s: %w", id, err)
	}
	return r, nil
}

// Templates returns every user template.
func (s *Store) Templates(ctx context.Context) ([]Record, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+templateCols+` FROM tpl_templates ORDER BY created_at`)
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		r, err := scanTemplate(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// CreateBuild inserts a build in the waiting state.
func (s *Store) CreateBuild(ctx context.Context, b BuildRecord) error {
	tags, _ := json.Marshal(nonNilStrings(b.Tags))
	_, err := s.db.ExecContext(ctx, `INSERT INTO tpl_builds (id, template_id, status, tags, created_at) VALUES (?, ?, ?, ?, ?)`,
		b.ID, b.TemplateID, b.Status, string(tags), ts(b.CreatedAt))
	if err != nil {
		return fmt.Errorf("insert build %s: %w", b.ID, err)
	}
	return nil
}

// UpdateBuild stores a build's status, reason, request and result.
func (s *Store) UpdateBuild(ctx context.Context, b BuildRecord) error {
	res, _ := json.Marshal(b.Result)
	req := string(b.Request)
	if req == "" {
		req = "{}"
	}
	fin := ""
	if !b.FinishedAt.IsZero() {
		fin = ts(b.FinishedAt)
	}
	_, err := s.db.ExecContext(ctx, `UPDATE tpl_builds SET status = ?, reason = ?, reason_step = ?, request = ?,
		result = ?, finished_at = ? WHERE id = ?`, b.Status, b.Reason, b.ReasonStep, req, string(res), fin, b.ID)
	if err != nil {
		return fmt.Errorf("update build %s: %w", b.ID, err)
	}
	return nil
}

// Build returns a build by ID.
func (s *Store) Build(ctx context.Context, id string) (BuildRecord, error) {
	var b BuildRecord
	var req, res, tags, created, fin string
	err := s.db.QueryRowContext(ctx, `SELECT id, template_id, status, reason, reason_step, request, result, tags,
		created_at, finished_at FROM tpl_builds WHERE id = ?`, id).
		Scan(&b.ID, &b.TemplateID, &b.Status, &b.Reason, &b.ReasonStep, &req, &res, &tags, &created, &fin)
	if errors.Is(err, sql.ErrNoRows) {
		return b, errdefs.NotFound("build %q not found", id)
	}
	if err != nil {
		return b, fmt.Errorf("read build %s: %w", id, err)
	}
	b.Request = json.RawMessage(req)
	_ = json.Unmarshal([]byte(res), &b.Result)
	_ = json.Unmarshal([]byte(tags), &b.Tags)
	b.CreatedAt, b.FinishedAt = parseTS(created), parseTS(fin)
	return b, nil
}

// FailUnfinished marks builds a previous server process left running as
// failed; their build sandboxes are gone.
func (s *Store) FailUnfinished(ctx context.Context, now time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE tpl_builds SET status = ?, reason = ?, finished_at = ?
		WHERE status IN (?, ?)`, StatusError, "the sbx server restarted during the build; start the build again",
		ts(now), StatusBuilding, StatusWaiting)
	if err != nil {
		return 0, fmt.Errorf("fail unfinished builds: %w", err)
	}
	return res.RowsAffected()
}

// AppendLog adds build log lines.
func (s *Store) AppendLog(ctx context.Context, buildID string, entries ...LogEntry) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var next int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), -1) + 1 FROM tpl_build_logs WHERE build_id = ?`,
		buildID).Scan(&next); err != nil {
		return err
	}
	for i, e := range entries {
		if _, err := tx.ExecContext(ctx, `INSERT INTO tpl_build_logs (build_id, seq, ts, level, step, message)
			VALUES (?, ?, ?, ?, ?, ?)`, buildID, next+i, ts(e.Timestamp), e.Level, e.Step, e.Message); err != nil {
			return fmt.Errorf("append build log: %w", err)
		}
	}
	return tx.Commit()
}

// Logs returns up to limit log lines of a build starting at offset.
func (s *Store) Logs(ctx context.Context, buildID string, offset, limit int) ([]LogEntry, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT ts, level, step, message FROM tpl_build_logs
		WHERE build_id = ? AND seq >= ? ORDER BY seq LIMIT ?`, buildID, offset, limit)
	if err != nil {
		return nil, fmt.Errorf("read build logs: %w", err)
	}
	defer rows.Close()
	out := []LogEntry{}
	for rows.Next() {
		var e LogEntry
		var t string
		if err := rows.Scan(&t, &e.Level, &e.Step, &e.Message); err != nil {
			return nil, err
		}
		e.Timestamp = parseTS(t)
		out = append(out, e)
	}
	return out, rows.Err()
}

// Builds returns a template's builds, newest first.
func (s *Store) Builds(ctx context.Context, templateID string) ([]BuildRecord, error) {
	return s.buildsWhere(ctx, "list builds",
		`SELECT id FROM tpl_builds WHERE template_id = ? ORDER BY created_at DESC`, templateID)
}

// ReadyBuilds returns every successful build, of existing and deleted templates.
func (s *Store) ReadyBuilds(ctx context.Context) ([]BuildRecord, error) {
	return s.buildsWhere(ctx, "list ready builds", `SELECT id FROM tpl_builds WHERE status = ?`, StatusReady)
}

// buildsWhere loads the builds whose IDs query selects. The IDs are read
// and the rows closed before each build is loaded, so the listing does not
// hold a connection while the per-build reads need one.
func (s *Store) buildsWhere(ctx context.Context, what, query string, args ...any) ([]BuildRecord, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	out := make([]BuildRecord, 0, len(ids))
	for _, id := range ids {
		b, err := s.Build(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}
