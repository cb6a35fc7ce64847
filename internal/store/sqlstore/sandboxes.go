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

const sandboxColumns = `id, team_id, template_id, build_id, alias, state, metadata, env_vars,
	cpu_count, memory_mb, disk_mb, started_at, end_at, killed_at, kill_reason, access_token,
	allow_internet, auto_pause, execution_id, runtime, netns, node_id`

func sandboxArgs(sb store.Sandbox) ([]any, error) {
	meta, err := json.Marshal(nonNil(sb.Metadata))
	if err != nil {
		return nil, fmt.Errorf("encode metadata: %w", err)
	}
	envs, err := json.Marshal(nonNil(sb.EnvVars))
	if err != nil {
		return nil, fmt.Errorf("encode env vars: %w", err)
	}
	return []any{sb.ID, sb.TeamID, sb.TemplateID, sb.BuildID, sb.Alias, string(sb.State),
		string(meta), string(envs), sb.CPUCount, sb.MemoryMB, sb.DiskMB,
		unixNano(sb.StartedAt), unixNano(sb.EndAt), unixNano(sb.KilledAt), sb.KillReason,
		sb.AccessToken, sb.AllowInternet, sb.AutoPause, sb.ExecutionID, sb.Runtime, sb.NetNS, sb.NodeID}, nil
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// InsertSandbox stores a new sandbox and records its change in the same transaction.
func (s *Store) InsertSandbox(ctx context.Context, sb store.Sandbox, change *store.Change) error {
	args, err := sandboxArgs(sb)
	if err != nil {
		return err
	}
	q := `INSERT INTO sandboxes(` + sandboxColumns + `) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`
	return s.write(ctx, change, func(tx *sqldb.Tx) error {
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			if sqldb.IsUniqueViolation(err) {
				return errdefs.Exists("sandbox %s already exists", sb.ID)
			}
			return fmt.Errorf("insert sandbox %s: %w", sb.ID, err)
		}
		return nil
	})
}

// UpdateSandbox replaces a sandbox row and records its change.
func (s *Store) UpdateSandbox(ctx context.Context, sb store.Sandbox, change *store.Change) error {
	args, err := sandboxArgs(sb)
	if err != nil {
		return err
	}
	q := `UPDATE sandboxes SET team_id=?2, template_id=?3, build_id=?4, alias=?5, state=?6,
		metadata=?7, env_vars=?8, cpu_count=?9, memory_mb=?10, disk_mb=?11, started_at=?12,
		end_at=?13, killed_at=?14, kill_reason=?15, access_token=?16, allow_internet=?17,
		auto_pause=?18, execution_id=?19, runtime=?20, netns=?21, node_id=?22
		WHERE id=?1 AND state != 'killed' AND (node_id = ?22 OR node_id = '' OR ?22 = '')`
	// Killed is final: a node declared lost whose sandboxes were recorded
	// killed (node_lost) can neither bring one back with a stale write nor
	// record it killed a second time (one killed event per sandbox).
	// A sandbox another node took over (MoveSandbox: resumed there from
	// the blob store) is that node's: the first node's writes are refused.
	return s.write(ctx, change, func(tx *sqldb.Tx) error {
		res, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("update sandbox %s: %w", sb.ID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			var node string
			if tx.QueryRowContext(ctx, `SELECT node_id FROM sandboxes WHERE id = ? AND state != 'killed'`, sb.ID).Scan(&node) == nil &&
				node != sb.NodeID {
				return errdefs.Wrap(errdefs.ErrNotFound, store.ErrMoved, "sandbox %s runs on node %q now, not on %q", sb.ID, node, sb.NodeID)
			}
			return errdefs.NotFound("sandbox %s not found", sb.ID)
		}
		return nil
	})
}

// write runs fn and the change's recorder in one transaction.
func (s *Store) write(ctx context.Context, change *store.Change, fn func(*sqldb.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	if change != nil && s.recorder != nil {
		if err := s.recorder.RecordTx(ctx, tx, *change); err != nil {
			return fmt.Errorf("record %s: %w", change.Type, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if change != nil && s.recorder != nil {
		s.recorder.Committed()
	}
	return nil
}

// Sandbox returns one sandbox by ID.
func (s *Store) Sandbox(ctx context.Context, id string) (store.Sandbox, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+sandboxColumns+` FROM sandboxes WHERE id = ?`, id)
	sb, err := scanSandbox(row)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Sandbox{}, errdefs.NotFound("sandbox %s not found", id)
	}
	return sb, err
}

// ListSandboxes lists a team's sandboxes, newest first, filtered.
func (s *Store) ListSandboxes(ctx context.Context, f store.ListFilter) ([]store.Sandbox, error) {
	states := f.States
	if len(states) == 0 {
		states = []store.SandboxState{store.StateRunning, store.StatePaused}
	}
	q := `SELECT ` + sandboxColumns + ` FROM sandboxes WHERE team_id = ? AND state IN (` +
		strings.TrimSuffix(strings.Repeat("?,", len(states)), ",") + `)`
	args := []any{f.TeamID}
	for _, st := range states {
		args = append(args, string(st))
	}
	cmp, order := "<", "DESC"
	if f.Ascending {
		cmp, order = ">", "ASC"
	}
	if f.After != "" {
		after, err := s.Sandbox(ctx, f.After)
		if err != nil || after.TeamID != f.TeamID {
			return nil, errdefs.Invalid("invalid nextToken: it names no sandbox of this team")
		}
		q += ` AND (started_at ` + cmp + ` ? OR (started_at = ? AND id ` + cmp + ` ?))`
		args = append(args, unixNano(after.StartedAt), unixNano(after.StartedAt), after.ID)
	}
	if !f.StartedAfter.IsZero() {
		q += ` AND started_at >= ?`
		args = append(args, unixNano(f.StartedAfter))
	}
	if !f.StartedBefore.IsZero() {
		q += ` AND started_at < ?`
		args = append(args, unixNano(f.StartedBefore))
	}
	if f.Template != "" {
		q += ` AND (template_id = ? OR alias = ?)`
		args = append(args, f.Template, f.Template)
	}
	q += ` ORDER BY started_at ` + order + `, id ` + order
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	defer rows.Close()
	var out []store.Sandbox
	for rows.Next() {
		sb, err := scanSandbox(rows)
		if err != nil {
			return nil, err
		}
		if !matches(sb.Metadata, f.Metadata) {
			continue
		}
		out = append(out, sb)
		if f.Limit > 0 && len(out) >= f.Limit {
			break
		}
	}
	return out, rows.Err()
}

func matches(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// LiveSandboxes lists sandboxes of every team and node that are not killed.
func (s *Store) LiveSandboxes(ctx context.Context) ([]store.Sandbox, error) {
	return s.liveSandboxes(ctx, `SELECT `+sandboxColumns+` FROM sandboxes WHERE state != ?`,
		string(store.StateKilled))
}

// NodeSandboxes lists the sandboxes not killed of node and of no node.
func (s *Store) NodeSandboxes(ctx context.Context, node string) ([]store.Sandbox, error) {
	return s.liveSandboxes(ctx, `SELECT `+sandboxColumns+` FROM sandboxes WHERE state != ? AND node_id IN (?, '')`,
		string(store.StateKilled), node)
}

func (s *Store) liveSandboxes(ctx context.Context, q string, args ...any) ([]store.Sandbox, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list live sandboxes: %w", err)
	}
	defer rows.Close()
	var out []store.Sandbox
	for rows.Next() {
		sb, err := scanSandbox(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, sb)
	}
	return out, rows.Err()
}

func scanSandbox(row scanner) (store.Sandbox, error) {
	var sb store.Sandbox
	var state, meta, envs string
	var started, end, killed int64
	err := row.Scan(&sb.ID, &sb.TeamID, &sb.TemplateID, &sb.BuildID, &sb.Alias, &state, &meta, &envs,
		&sb.CPUCount, &sb.MemoryMB, &sb.DiskMB, &started, &end, &killed, &sb.KillReason,
		&sb.AccessToken, &sb.AllowInternet, &sb.AutoPause, &sb.ExecutionID, &sb.Runtime, &sb.NetNS, &sb.NodeID)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return sb, err
		}
		return sb, fmt.Errorf("read sandbox: %w", err)
	}
	sb.State = store.SandboxState(state)
	sb.StartedAt, sb.EndAt, sb.KilledAt = fromNano(started), fromNano(end), fromNano(killed)
	if err := json.Unmarshal([]byte(meta), &sb.Metadata); err != nil {
		return sb, fmt.Errorf("decode metadata of sandbox %s: %w", sb.ID, err)
	}
	if err := json.Unmarshal([]byte(envs), &sb.EnvVars); err != nil {
		return sb, fmt.Errorf("decode env vars of sandbox %s: %w", sb.ID, err)
	}
	return sb, nil
}
