package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
)

var _ store.BuildJobs = (*Store)(nil)

// QueueBuild moves a waiting build to a queued job.
func (s *Store) QueueBuild(ctx context.Context, id string, request json.RawMessage) error {
	req := string(request)
	if req == "" {
		req = "{}"
	}
	res, err := s.db.ExecContext(ctx, `UPDATE tpl_builds SET status = 'building', request = ?, job_state = ?, node_id = '',
		claim_until = 0 WHERE id = ? AND status = 'waiting'`, req, store.JobQueued, id)
	if err != nil {
		return fmt.Errorf("queue build %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errdefs.Conflict("build %s was started already; request a new build with POST /v3/templates", id)
	}
	return nil
}

// ClaimBuild takes the oldest claimable build with a compare-and-swap on
// its claim: a candidate another node took between the read and the
// update is skipped and the next one tried. The same statements on SQLite
// and PostgreSQL; on PostgreSQL FOR UPDATE SKIP LOCKED would save the
// losing node a retry, not change who wins.
func (s *Store) ClaimBuild(ctx context.Context, node string, now, until time.Time) (store.BuildJob, bool, error) {
	// A cancelled build whose node stopped renewing (it died) is nobody's
	// to stop: end it here rather than build it again.
	if _, err := s.db.ExecContext(ctx, `UPDATE tpl_builds SET status = 'error', reason = ?, reason_step = '', finished_at = ?,
		job_state = ? WHERE job_state = ? AND claim_until < ?`,
		store.CancelledReason, tplTS(now), store.JobDone, store.JobCancelling, ms(now)); err != nil {
		return store.BuildJob{}, false, fmt.Errorf("end cancelled builds whose node stopped: %w", err)
	}
	for range 8 {
		var id, prevNode string
		var prevUntil int64
		var claims int
		err := s.db.QueryRowContext(ctx, `SELECT id, node_id, claim_until, claims FROM tpl_builds
			WHERE status = 'building' AND (job_state = ? OR (job_state = ? AND claim_until < ?))
			ORDER BY created_at, id LIMIT 1`, store.JobQueued, store.JobClaimed, ms(now)).Scan(&id, &prevNode, &prevUntil, &claims)
		if errors.Is(err, sql.ErrNoRows) {
			return store.BuildJob{}, false, nil
		}
		if err != nil {
			return store.BuildJob{}, false, fmt.Errorf("find a build to claim: %w", err)
		}
		res, err := s.db.ExecContext(ctx, `UPDATE tpl_builds SET job_state = ?, node_id = ?, claim_until = ?, claims = claims + 1
			WHERE id = ? AND status = 'building' AND job_state IN (?, ?) AND node_id = ? AND claim_until = ? AND claims = ?`,
			store.JobClaimed, node, ms(until), id, store.JobQueued, store.JobClaimed, prevNode, prevUntil, claims)
		if err != nil {
			return store.BuildJob{}, false, fmt.Errorf("claim build %s: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			continue // another node was quicker
		}
		b, err := s.Build(ctx, id)
		if err != nil {
			return store.BuildJob{}, false, err
		}
		return store.BuildJob{Build: b, Claims: claims + 1, ClaimUntil: fromMS(ms(until))}, true, nil
	}
	return store.BuildJob{}, false, nil // contended: try again at the next poll
}

// RenewBuildClaim extends node's claim.
func (s *Store) RenewBuildClaim(ctx context.Context, id, node string, until time.Time) error {
	var state string
	err := s.db.QueryRowContext(ctx, `UPDATE tpl_builds SET claim_until = ? WHERE id = ? AND job_state IN (?, ?) AND node_id = ?
		RETURNING job_state`, ms(until), id, store.JobClaimed, store.JobCancelling, node).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("build %s: %w", id, store.ErrClaimLost)
	}
	if err != nil {
		return fmt.Errorf("renew the claim of build %s: %w", id, err)
	}
	if state == store.JobCancelling {
		return fmt.Errorf("build %s: %w", id, store.ErrBuildCancelled)
	}
	return nil
}

// FinishBuild records a claimed build's outcome if node holds it.
func (s *Store) FinishBuild(ctx context.Context, b store.BuildRecord, node string) error {
	res, _ := json.Marshal(b.Result)
	fin := ""
	if !b.FinishedAt.IsZero() {
		fin = tplTS(b.FinishedAt)
	}
	r, err := s.db.ExecContext(ctx, `UPDATE tpl_builds SET status = ?, reason = ?, reason_step = ?, result = ?, finished_at = ?,
		job_state = ? WHERE id = ? AND job_state IN (?, ?) AND node_id = ?`,
		b.Status, b.Reason, b.ReasonStep, string(res), fin, store.JobDone, b.ID, store.JobClaimed, store.JobCancelling, node)
	if err != nil {
		return fmt.Errorf("finish build %s: %w", b.ID, err)
	}
	if n, _ := r.RowsAffected(); n == 0 {
		return fmt.Errorf("build %s: %w", b.ID, store.ErrClaimLost)
	}
	return nil
}

// ReleaseBuilds queues node's claimed builds again.
func (s *Store) ReleaseBuilds(ctx context.Context, node string) (int64, error) {
	if _, err := s.db.ExecContext(ctx, `UPDATE tpl_builds SET status = 'error', reason = ?, reason_step = '', finished_at = ?,
		job_state = ? WHERE job_state = ? AND node_id = ? AND status = 'building'`,
		store.CancelledReason, tplTS(time.Now()), store.JobDone, store.JobCancelling, node); err != nil {
		return 0, fmt.Errorf("end the cancelled builds of node %s: %w", node, err)
	}
	res, err := s.db.ExecContext(ctx, `UPDATE tpl_builds SET job_state = ?, node_id = '', claim_until = 0
		WHERE job_state = ? AND node_id = ? AND status = 'building'`, store.JobQueued, store.JobClaimed, node)
	if err != nil {
		return 0, fmt.Errorf("release the builds of node %s: %w", node, err)
	}
	return res.RowsAffected()
}

// CancelBuild ends a queued build, or asks the node holding a claimed one
// to stop it; each a conditional update, so a node claiming the build at
// the same moment is either before it (the build is claimed: requested)
// or after it (the build has ended: nothing to claim).
func (s *Store) CancelBuild(ctx context.Context, id, reason string, at time.Time) (ended, requested bool, err error) {
	res, err := s.db.ExecContext(ctx, `UPDATE tpl_builds SET status = 'error', reason = ?, reason_step = '', finished_at = ?,
		job_state = ? WHERE id = ? AND status = 'building' AND job_state = ?`, reason, tplTS(at), store.JobDone, id, store.JobQueued)
	if err != nil {
		return false, false, fmt.Errorf("cancel build %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return true, false, nil
	}
	res, err = s.db.ExecContext(ctx, `UPDATE tpl_builds SET job_state = ? WHERE id = ? AND status = 'building' AND job_state = ?`,
		store.JobCancelling, id, store.JobClaimed)
	if err != nil {
		return false, false, fmt.Errorf("cancel build %s: %w", id, err)
	}
	n, _ := res.RowsAffected()
	return false, n > 0, nil
}

// PutUpload inserts an upload unless one exists, and returns the stored one.
func (s *Store) PutUpload(ctx context.Context, u store.Upload) (store.Upload, error) {
	_, err := s.db.ExecContext(ctx, `INSERT INTO tpl_uploads (team_id, files_hash, blob_digest, content_digest, entries, bytes, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, u.TeamID, u.FilesHash, u.BlobDigest, u.ContentDigest, u.Entries, u.Bytes, ms(u.CreatedAt))
	if err != nil && !sqldb.IsUniqueViolation(err) {
		return store.Upload{}, fmt.Errorf("record upload %s: %w", u.FilesHash, err)
	}
	return s.Upload(ctx, u.TeamID, u.FilesHash)
}

// Upload returns a team's upload of a files hash.
func (s *Store) Upload(ctx context.Context, teamID, filesHash string) (store.Upload, error) {
	u := store.Upload{TeamID: teamID, FilesHash: filesHash}
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT blob_digest, content_digest, entries, bytes, created_at FROM tpl_uploads
		WHERE team_id = ? AND files_hash = ?`, teamID, filesHash).Scan(&u.BlobDigest, &u.ContentDigest, &u.Entries, &u.Bytes, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return u, errdefs.NotFound("files %s were not uploaded", filesHash)
	}
	if err != nil {
		return u, fmt.Errorf("read upload %s: %w", filesHash, err)
	}
	u.CreatedAt = fromMS(created)
	return u, nil
}

// UploadBytes sums the unpacked bytes of a team's uploads.
func (s *Store) UploadBytes(ctx context.Context, teamID string) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(bytes), 0) FROM tpl_uploads WHERE team_id = ?`, teamID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("sum the uploads of team %s: %w", teamID, err)
	}
	return n, nil
}

// UploadsBefore returns up to limit uploads created before t, oldest first.
func (s *Store) UploadsBefore(ctx context.Context, t time.Time, limit int) ([]store.Upload, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT team_id, files_hash, blob_digest, content_digest, entries, bytes, created_at
		FROM tpl_uploads WHERE created_at < ? ORDER BY created_at, team_id, files_hash LIMIT ?`, ms(t), limit)
	if err != nil {
		return nil, fmt.Errorf("list old uploads: %w", err)
	}
	defer rows.Close()
	var out []store.Upload
	for rows.Next() {
		var u store.Upload
		var created int64
		if err := rows.Scan(&u.TeamID, &u.FilesHash, &u.BlobDigest, &u.ContentDigest, &u.Entries, &u.Bytes, &created); err != nil {
			return nil, fmt.Errorf("list old uploads: %w", err)
		}
		u.CreatedAt = fromMS(created)
		out = append(out, u)
	}
	return out, rows.Err()
}

// DeleteUpload deletes u's row if it is still the one recorded, and
// reports whether its blob is then named by no upload and no layer stack.
func (s *Store) DeleteUpload(ctx context.Context, u store.Upload) (deleted, orphan bool, err error) {
	err = s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM tpl_uploads WHERE team_id = ? AND files_hash = ? AND created_at = ?`,
			u.TeamID, u.FilesHash, ms(u.CreatedAt))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil || n == 0 {
			return err
		}
		deleted = true
		var refs int64
		err = tx.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM tpl_uploads WHERE blob_digest = ?)
			+ (SELECT COUNT(*) FROM layer_blobs WHERE digest = ?)`, u.BlobDigest, u.BlobDigest).Scan(&refs)
		orphan = refs == 0
		return err
	})
	if err != nil {
		return false, false, fmt.Errorf("delete upload %s of team %s: %w", u.FilesHash, u.TeamID, err)
	}
	return deleted, orphan, nil
}
