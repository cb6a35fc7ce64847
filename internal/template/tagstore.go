package template

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// TagRecord is one tag of a template: a name for one of its builds.
type TagRecord struct {
	TemplateID string
	Tag        string
	BuildID    string
	CreatedAt  time.Time
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// SetTags points tags of a template at a build, moving tags that pointed
// elsewhere, in one transaction.
func (s *Store) SetTags(ctx context.Context, templateID, buildID string, tags []string, now time.Time) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, tag := range tags {
		if _, err := tx.ExecContext(ctx, `INSERT INTO tpl_tags (template_id, tag, build_id, created_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (template_id, tag) DO UPDATE SET build_id = excluded.build_id, created_at = excluded.created_at`,
			templateID, tag, buildID, ts(now)); err != nil {
			return fmt.Errorf("tag build %s as %s: %w", buildID, tag, err)
		}
	}
	return tx.Commit()
}

// RemoveTags deletes tags of a template. When one of them does not exist it
// removes none and returns a not-found error naming the missing ones.
func (s *Store) RemoveTags(ctx context.Context, templateID string, tags []string) (missing []string, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	for _, tag := range tags {
		res, err := tx.ExecContext(ctx, `DELETE FROM tpl_tags WHERE template_id = ? AND tag = ?`, templateID, tag)
		if err != nil {
			return nil, fmt.Errorf("remove tag %s: %w", tag, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			missing = append(missing, tag)
		}
	}
	if len(missing) > 0 {
		return missing, nil
	}
	return nil, tx.Commit()
}

// Tag returns one tag of a template.
func (s *Store) Tag(ctx context.Context, templateID, tag string) (TagRecord, error) {
	r := TagRecord{TemplateID: templateID, Tag: tag}
	var created string
	err := s.db.QueryRowContext(ctx, `SELECT build_id, created_at FROM tpl_tags WHERE template_id = ? AND tag = ?`,
		templateID, tag).Scan(&r.BuildID, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return r, errdefs.NotFound("template %s has no tag %q", templateID, tag)
	}
	if err != nil {
		return r, fmt.Errorf("read tag %s of template %s: %w", tag, templateID, err)
	}
	r.CreatedAt = parseTS(created)
	return r, nil
}

// Tags returns a template's tags sorted by tag, or every template's when
// templateID is "" (pruning keeps tagged builds).
func (s *Store) Tags(ctx context.Context, templateID string) ([]TagRecord, error) {
	q, args := `SELECT template_id, tag, build_id, created_at FROM tpl_tags ORDER BY template_id, tag`, []any(nil)
	if templateID != "" {
		q, args = `SELECT template_id, tag, build_id, created_at FROM tpl_tags WHERE template_id = ? ORDER BY tag`, []any{templateID}
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list tags: %w", err)
	}
	defer rows.Close()
	var out []TagRecord
	for rows.Next() {
		var r TagRecord
		var created string
		if err := rows.Scan(&r.TemplateID, &r.Tag, &r.BuildID, &created); err != nil {
			return nil, err
		}
		r.CreatedAt = parseTS(created)
		out = append(out, r)
	}
	return out, rows.Err()
}
