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
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
)

// The templates repository (store.Templates): tables tpl_*. Their times
// are RFC 3339 text, as the tables were first written.

var _ store.Templates = (*Store)(nil)

func tplTS(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func parseTplTS(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// CreateTemplate inserts a template row.
func (s *Store) CreateTemplate(ctx context.Context, r store.TemplateRecord) error {
	names, _ := json.Marshal(r.Names)
	_, err := s.db.ExecContext(ctx, `INSERT INTO tpl_templates
		(id, team_id, names, public, cpu_count, memory_mb, disk_mb, current_build, build_count, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.TeamID, string(names), r.Public, r.CPUCount, r.MemoryMB, r.DiskMB, r.CurrentBuild, r.BuildCount,
		tplTS(r.CreatedAt), tplTS(r.UpdatedAt))
	if sqldb.IsUniqueViolation(err) {
		return errdefs.Exists("template %s already exists", r.ID)
	}
	if err != nil {
		return fmt.Errorf("insert template %s: %w", r.ID, err)
	}
	return nil
}

// UpdateTemplate stores a template's resources, names and current build.
func (s *Store) UpdateTemplate(ctx context.Context, r store.TemplateRecord) error {
	names, _ := json.Marshal(r.Names)
	_, err := s.db.ExecContext(ctx, `UPDATE tpl_templates SET names = ?, public = ?, cpu_count = ?, memory_mb = ?,
		disk_mb = ?, current_build = ?, build_count = ?, updated_at = ? WHERE id = ?`,
		string(names), r.Public, r.CPUCount, r.MemoryMB, r.DiskMB, r.CurrentBuild, r.BuildCount, tplTS(r.UpdatedAt), r.ID)
	if err != nil {
		return fmt.Errorf("update template %s: %w", r.ID, err)
	}
	return nil
}

// DeleteTemplate removes a template, its tags and its build logs.
func (s *Store) DeleteTemplate(ctx context.Context, id string) error {
	return s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		for _, q := range []string{
			`DELETE FROM tpl_build_logs WHERE build_id IN (SELECT id FROM tpl_builds WHERE template_id = ?)`,
			`DELETE FROM tpl_tags WHERE template_id = ?`,
			`DELETE FROM tpl_templates WHERE id = ?`,
		} {
			if _, err := tx.ExecContext(ctx, q, id); err != nil {
				return fmt.Errorf("delete template %s: %w", id, err)
			}
		}
		return nil
	})
}

const templateCols = `id, team_id, names, public, cpu_count, memory_mb, disk_mb, current_build, build_count, created_at, updated_at`

func scanTemplate(sc interface{ Scan(...any) error }) (store.TemplateRecord, error) {
	var r store.TemplateRecord
	var names, created, updated string
	err := sc.Scan(&r.ID, &r.TeamID, &names, &r.Public, &r.CPUCount, &r.MemoryMB, &r.DiskMB, &r.CurrentBuild,
		&r.BuildCount, &created, &updated)
	if err != nil {
		return r, err
	}
	_ = json.Unmarshal([]byte(names), &r.Names)
	r.CreatedAt, r.UpdatedAt = parseTplTS(created), parseTplTS(updated)
	return r, nil
}

// Template returns a template row by ID.
func (s *Store) Template(ctx context.Context, id string) (store.TemplateRecord, error) {
	r, err := scanTemplate(s.db.QueryRowContext(ctx, `SELECT `+templateCols+` FROM tpl_templates WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return r, errdefs.NotFound("template %q not found", id)
	}
	if err != nil {
		return r, fmt.Errorf("read template %s: %w", id, err)
	}
	return r, nil
}

// Templates returns every user template, oldest first.
func (s *Store) Templates(ctx context.Context) ([]store.TemplateRecord, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+templateCols+` FROM tpl_templates ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	defer rows.Close()
	var out []store.TemplateRecord
	for rows.Next() {
		r, err := scanTemplate(rows)
		if err != nil {
			return nil, fmt.Errorf("list templates: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// CreateBuild inserts a build.
func (s *Store) CreateBuild(ctx context.Context, b store.BuildRecord) error {
	tags, _ := json.Marshal(nonNilStrings(b.Tags))
	_, err := s.db.ExecContext(ctx, `INSERT INTO tpl_builds (id, template_id, status, tags, created_at, node_id)
		VALUES (?, ?, ?, ?, ?, ?)`, b.ID, b.TemplateID, b.Status, string(tags), tplTS(b.CreatedAt), b.NodeID)
	if sqldb.IsUniqueViolation(err) {
		return errdefs.Exists("build %s already exists", b.ID)
	}
	if err != nil {
		return fmt.Errorf("insert build %s: %w", b.ID, err)
	}
	return nil
}

// UpdateBuild stores a build's status, reason, request and result.
func (s *Store) UpdateBuild(ctx context.Context, b store.BuildRecord) error {
	res, _ := json.Marshal(b.Result)
	req := string(b.Request)
	if req == "" {
		req = "{}"
	}
	fin := ""
	if !b.FinishedAt.IsZero() {
		fin = tplTS(b.FinishedAt)
	}
	_, err := s.db.ExecContext(ctx, `UPDATE tpl_builds SET status = ?, reason = ?, reason_step = ?, request = ?,
		result = ?, finished_at = ? WHERE id = ?`, b.Status, b.Reason, b.ReasonStep, req, string(res), fin, b.ID)
	if err != nil {
		return fmt.Errorf("update build %s: %w", b.ID, err)
	}
	return nil
}

const buildCols = `id, template_id, status, reason, reason_step, request, result, tags, created_at, finished_at, node_id`

func scanBuild(sc interface{ Scan(...any) error }) (store.BuildRecord, error) {
	var b store.BuildRecord
	var req, res, tags, created, fin string
	if err := sc.Scan(&b.ID, &b.TemplateID, &b.Status, &b.Reason, &b.ReasonStep, &req, &res, &tags, &created, &fin, &b.NodeID); err != nil {
		return b, err
	}
	b.Request = json.RawMessage(req)
	_ = json.Unmarshal([]byte(res), &b.Result)
	_ = json.Unmarshal([]byte(tags), &b.Tags)
	b.CreatedAt, b.FinishedAt = parseTplTS(created), parseTplTS(fin)
	return b, nil
}

// Build returns a build by ID.
func (s *Store) Build(ctx context.Context, id string) (store.BuildRecord, error) {
	b, err := scanBuild(s.db.QueryRowContext(ctx, `SELECT `+buildCols+` FROM tpl_builds WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return b, errdefs.NotFound("build %q not found", id)
	}
	if err != nil {
		return b, fmt.Errorf("read build %s: %w", id, err)
	}
	return b, nil
}

// Builds returns a template's builds, newest first.
func (s *Store) Builds(ctx context.Context, templateID string) ([]store.BuildRecord, error) {
	return s.buildsWhere(ctx, "list builds", `WHERE template_id = ? ORDER BY created_at DESC, id DESC`, templateID)
}

// BuildsWithStatus returns every build in status.
func (s *Store) BuildsWithStatus(ctx context.Context, status string) ([]store.BuildRecord, error) {
	return s.buildsWhere(ctx, "list "+status+" builds", `WHERE status = ? ORDER BY created_at, id`, status)
}

func (s *Store) buildsWhere(ctx context.Context, what, where string, args ...any) ([]store.BuildRecord, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+buildCols+` FROM tpl_builds `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	out := []store.BuildRecord{}
	for rows.Next() {
		b, err := scanBuild(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// FailBuilds moves node's builds in one of the statuses from to status to.
func (s *Store) FailBuilds(ctx context.Context, node string, from []string, to, reason string, at time.Time) (int64, error) {
	if len(from) == 0 {
		return 0, nil
	}
	args := []any{to, reason, tplTS(at), node}
	for _, st := range from {
		args = append(args, st)
	}
	res, err := s.db.ExecContext(ctx, `UPDATE tpl_builds SET status = ?, reason = ?, finished_at = ?
		WHERE (node_id = ? OR node_id = '') AND job_state = '' AND status IN (?`+strings.Repeat(",?", len(from)-1)+`)`, args...)
	if err != nil {
		return 0, fmt.Errorf("fail unfinished builds: %w", err)
	}
	return res.RowsAffected()
}

// AppendBuildLog adds build log lines after the build's last one.
func (s *Store) AppendBuildLog(ctx context.Context, buildID string, entries ...store.BuildLogEntry) error {
	return s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		var next int
		// On PostgreSQL two appends to one build could read the same next
		// line number: the second then fails on the primary key rather
		// than interleaving. Appends to one build come from its one builder.
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), -1) + 1 FROM tpl_build_logs WHERE build_id = ?`,
			buildID).Scan(&next); err != nil {
			return fmt.Errorf("append build log: %w", err)
		}
		for i, e := range entries {
			if _, err := tx.ExecContext(ctx, `INSERT INTO tpl_build_logs (build_id, seq, ts, level, step, message)
				VALUES (?, ?, ?, ?, ?, ?)`, buildID, next+i, tplTS(e.Timestamp), e.Level, e.Step, e.Message); err != nil {
				return fmt.Errorf("append build log: %w", err)
			}
		}
		return nil
	})
}

// BuildLogs returns up to limit log lines of a build starting at offset.
func (s *Store) BuildLogs(ctx context.Context, buildID string, offset, limit int) ([]store.BuildLogEntry, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT ts, level, step, message FROM tpl_build_logs
		WHERE build_id = ? AND seq >= ? ORDER BY seq LIMIT ?`, buildID, offset, limit)
	if err != nil {
		return nil, fmt.Errorf("read build logs: %w", err)
	}
	defer rows.Close()
	out := []store.BuildLogEntry{}
	for rows.Next() {
		var e store.BuildLogEntry
		var t string
		if err := rows.Scan(&t, &e.Level, &e.Step, &e.Message); err != nil {
			return nil, fmt.Errorf("read build logs: %w", err)
		}
		e.Timestamp = parseTplTS(t)
		out = append(out, e)
	}
	return out, rows.Err()
}

// SetTemplateTags points tags of a template at a build.
func (s *Store) SetTemplateTags(ctx context.Context, templateID, buildID string, tags []string, at time.Time) error {
	return s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		for _, tag := range tags {
			if _, err := tx.ExecContext(ctx, `INSERT INTO tpl_tags (template_id, tag, build_id, created_at) VALUES (?, ?, ?, ?)
				ON CONFLICT (template_id, tag) DO UPDATE SET build_id = excluded.build_id, created_at = excluded.created_at`,
				templateID, tag, buildID, tplTS(at)); err != nil {
				return fmt.Errorf("tag build %s as %s: %w", buildID, tag, err)
			}
		}
		return nil
	})
}

// errMissingTags rolls RemoveTemplateTags back.
var errMissingTags = errors.New("missing tags")

// RemoveTemplateTags deletes tags of a template, all or none.
func (s *Store) RemoveTemplateTags(ctx context.Context, templateID string, tags []string) (missing []string, err error) {
	err = s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		for _, tag := range tags {
			res, err := tx.ExecContext(ctx, `DELETE FROM tpl_tags WHERE template_id = ? AND tag = ?`, templateID, tag)
			if err != nil {
				return fmt.Errorf("remove tag %s: %w", tag, err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				missing = append(missing, tag)
			}
		}
		if len(missing) > 0 {
			return errMissingTags
		}
		return nil
	})
	if errors.Is(err, errMissingTags) {
		return missing, nil
	}
	return nil, err
}

// TemplateTag returns one tag of a template.
func (s *Store) TemplateTag(ctx context.Context, templateID, tag string) (store.TemplateTag, error) {
	r := store.TemplateTag{TemplateID: templateID, Tag: tag}
	var created string
	err := s.db.QueryRowContext(ctx, `SELECT build_id, created_at FROM tpl_tags WHERE template_id = ? AND tag = ?`,
		templateID, tag).Scan(&r.BuildID, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return r, errdefs.NotFound("template %s has no tag %q", templateID, tag)
	}
	if err != nil {
		return r, fmt.Errorf("read tag %s of template %s: %w", tag, templateID, err)
	}
	r.CreatedAt = parseTplTS(created)
	return r, nil
}

// TemplateTags returns a template's tags, or every template's.
func (s *Store) TemplateTags(ctx context.Context, templateID string) ([]store.TemplateTag, error) {
	q, args := `SELECT template_id, tag, build_id, created_at FROM tpl_tags ORDER BY template_id, tag`, []any(nil)
	if templateID != "" {
		q, args = `SELECT template_id, tag, build_id, created_at FROM tpl_tags WHERE template_id = ? ORDER BY tag`, []any{templateID}
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list tags: %w", err)
	}
	defer rows.Close()
	var out []store.TemplateTag
	for rows.Next() {
		var r store.TemplateTag
		var created string
		if err := rows.Scan(&r.TemplateID, &r.Tag, &r.BuildID, &created); err != nil {
			return nil, fmt.Errorf("list tags: %w", err)
		}
		r.CreatedAt = parseTplTS(created)
		out = append(out, r)
	}
	return out, rows.Err()
}
