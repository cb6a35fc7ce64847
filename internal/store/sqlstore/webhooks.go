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

var _ store.Webhooks = (*Webhooks)(nil)

// Webhooks stores webhooks, their deliveries and attempts (tables webhooks,
// webhook_cursor, webhook_deliveries, webhook_attempts).
type Webhooks struct{ db *sqldb.DB }

// NewWebhooks returns the repository over db.
func NewWebhooks(db *sqldb.DB) *Webhooks { return &Webhooks{db: db} }

const hookColumns = `id, team_id, name, url, secret, events, enabled, created_at, updated_at, start_seq, disabled_reason, failing_since, consecutive_failures, prev_secret, prev_secret_until`

func scanHook(r scanner) (store.Webhook, error) {
	var w store.Webhook
	var secret, prev, evs string
	var created, updated, failing, prevUntil int64
	if err := r.Scan(&w.ID, &w.TeamID, &w.Name, &w.URL, &secret, &evs, &w.Enabled, &created, &updated,
		&w.StartSeq, &w.DisabledReason, &failing, &w.ConsecutiveFailures, &prev, &prevUntil); err != nil {
		return w, err
	}
	w.Secret, w.PrevSecret = store.WebhookSecret(secret), store.WebhookSecret(prev)
	w.PrevSecretUntil = fromNanos(prevUntil)
	if err := json.Unmarshal([]byte(evs), &w.Events); err != nil {
		return w, fmt.Errorf("webhook %s: decode events: %w", w.ID, err)
	}
	w.CreatedAt, w.UpdatedAt = time.Unix(0, created).UTC(), time.Unix(0, updated).UTC()
	w.FailingSince = fromNanos(failing)
	return w, nil
}

// fromNanos reads a Unix-ns column where 0 means unset.
func fromNanos(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

// nanos writes a time to a Unix-ns column where 0 means unset.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// queryer is *sqldb.DB or *sqldb.Tx.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func loadHooks(ctx context.Context, q queryer, where string, args ...any) ([]store.Webhook, error) {
	return queryAll(ctx, q, "load webhooks", scanHook, `SELECT `+hookColumns+` FROM webhooks `+where, args...)
}

func loadHook(ctx context.Context, q queryer, teamID, id string) (store.Webhook, error) {
	w, err := scanHook(q.QueryRowContext(ctx, `SELECT `+hookColumns+` FROM webhooks WHERE id = ? AND team_id = ?`, id, teamID))
	if errors.Is(err, sql.ErrNoRows) {
		return w, errdefs.NotFound("webhook %s not found", id)
	}
	if err != nil {
		return w, fmt.Errorf("load webhook %s: %w", id, err)
	}
	return w, nil
}

func saveHook(ctx context.Context, tx *sqldb.Tx, w *store.Webhook) error {
	evs, err := json.Marshal(w.Events)
	if err != nil {
		return fmt.Errorf("save webhook %s: %w", w.ID, err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO webhooks (`+hookColumns+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT(id) DO UPDATE SET name=excluded.name, url=excluded.url, secret=excluded.secret,
		events=excluded.events, enabled=excluded.enabled, updated_at=excluded.updated_at,
		disabled_reason=excluded.disabled_reason, failing_since=excluded.failing_since,
		consecutive_failures=excluded.consecutive_failures, prev_secret=excluded.prev_secret,
		prev_secret_until=excluded.prev_secret_until`,
		w.ID, w.TeamID, w.Name, w.URL, string(w.Secret), string(evs), w.Enabled, w.CreatedAt.UnixNano(),
		w.UpdatedAt.UnixNano(), w.StartSeq, w.DisabledReason, nanos(w.FailingSince), w.ConsecutiveFailures,
		string(w.PrevSecret), nanos(w.PrevSecretUntil))
	if err != nil {
		return fmt.Errorf("save webhook %s: %w", w.ID, err)
	}
	return nil
}

// ListWebhooks lists a team's webhooks, oldest first ("" = every team's).
func (s *Webhooks) ListWebhooks(ctx context.Context, teamID string) ([]store.Webhook, error) {
	if teamID == "" {
		return loadHooks(ctx, s.db, `ORDER BY created_at, id`)
	}
	return loadHooks(ctx, s.db, `WHERE team_id = ? ORDER BY created_at, id`, teamID)
}

// Webhook returns one of a team's webhooks.
func (s *Webhooks) Webhook(ctx context.Context, teamID, id string) (store.Webhook, error) {
	return loadHook(ctx, s.db, teamID, id)
}

// lockCursor holds the fan-out cursor until tx ends, so no fan-out runs
// meanwhile (webhook creation, changes and deletion take it too: a fan-out
// sees a webhook whole or not at all). skip: on PostgreSQL, return ok=false
// at once if another transaction holds it. On SQLite the transaction's
// write lock (BEGIN IMMEDIATE) already excludes every other writer.
func lockCursor(ctx context.Context, tx *sqldb.Tx, skip bool) (seq int64, ok bool, err error) {
	q := `SELECT seq FROM webhook_cursor WHERE id = 1`
	if tx.Dialect() == sqldb.Postgres {
		q += " FOR UPDATE"
		if skip {
			q += " SKIP LOCKED"
		}
	}
	err = tx.QueryRowContext(ctx, q).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) && skip {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("lock webhook cursor: %w", err)
	}
	return seq, true, nil
}

// CreateWebhook stores w under the fan-out cursor (see store.Webhooks).
func (s *Webhooks) CreateWebhook(ctx context.Context, w *store.Webhook, maxPerTeam int, startSeq func(context.Context) (int64, error)) error {
	return s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		if _, _, err := lockCursor(ctx, tx, false); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM webhooks WHERE team_id = ?`, w.TeamID).Scan(&n); err != nil {
			return fmt.Errorf("count webhooks: %w", err)
		}
		if n >= maxPerTeam {
			return errdefs.Exhausted("a team can have at most %d webhooks; delete unused ones with DELETE /events/webhooks/{id}", maxPerTeam)
		}
		seq, err := startSeq(ctx)
		if err != nil {
			return err
		}
		w.StartSeq = seq
		return saveHook(ctx, tx, w)
	})
}

// UpdateWebhook applies change to a team's webhook under the fan-out cursor.
func (s *Webhooks) UpdateWebhook(ctx context.Context, teamID, id string, change func(*store.Webhook) error) (store.Webhook, error) {
	var w store.Webhook
	err := s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		if _, _, err := lockCursor(ctx, tx, false); err != nil {
			return err
		}
		var err error
		if w, err = loadHook(ctx, tx, teamID, id); err != nil {
			return err
		}
		if err := change(&w); err != nil {
			return err
		}
		return saveHook(ctx, tx, &w)
	})
	if err != nil {
		return store.Webhook{}, fmt.Errorf("update webhook %s: %w", id, err)
	}
	return w, nil
}

// DeleteWebhook removes a team's webhook with its deliveries and attempts.
func (s *Webhooks) DeleteWebhook(ctx context.Context, teamID, id string, found func()) error {
	err := s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		// Under the fan-out cursor: no fan-out adds deliveries for it after it is gone.
		if _, _, err := lockCursor(ctx, tx, false); err != nil {
			return err
		}
		if _, err := loadHook(ctx, tx, teamID, id); err != nil {
			return err
		}
		if found != nil {
			found()
		}
		for _, q := range []string{
			`DELETE FROM webhook_attempts WHERE webhook_id = ?`,
			`DELETE FROM webhook_deliveries WHERE webhook_id = ?`,
			`DELETE FROM webhooks WHERE id = ?`,
		} {
			if _, err := tx.ExecContext(ctx, q, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete webhook %s: %w", id, err)
	}
	return nil
}

// WebhookCursor returns the fan-out cursor.
func (s *Webhooks) WebhookCursor(ctx context.Context) (int64, bool, error) {
	var seq int64
	err := s.db.QueryRowContext(ctx, `SELECT seq FROM webhook_cursor WHERE id = 1`).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("webhook cursor: %w", err)
	}
	return seq, true, nil
}

// InitWebhookCursor sets the cursor unless it exists already.
func (s *Webhooks) InitWebhookCursor(ctx context.Context, seq int64) error {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO webhook_cursor (id, seq) VALUES (1, ?) ON CONFLICT DO NOTHING`, seq); err != nil {
		return fmt.Errorf("webhook cursor: %w", err)
	}
	return nil
}

// deliveryCols are the columns a new delivery is inserted with.
const deliveryCols = `id, webhook_id, team_id, event_id, event_seq, event_type, sandbox_id, body, state, attempts, max_attempts, next_attempt_at, created_at, updated_at`

func deliveryRow(d *store.NewDelivery) []any {
	due := d.Due.UnixNano()
	return []any{d.ID, d.WebhookID, d.TeamID, d.EventID, d.EventSeq, d.EventType, d.SandboxID, d.Body,
		store.DeliveryPending, 0, d.MaxAttempts, due, due, due}
}

// FanOut runs fn under the fan-out cursor and stores its deliveries and the
// new cursor in one transaction.
func (s *Webhooks) FanOut(ctx context.Context, notify string, fn store.FanOutFunc) (cursor int64, ran bool, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, false, fmt.Errorf("fan-out: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	cursor, ok, err := lockCursor(ctx, tx, true)
	if err != nil || !ok {
		return 0, false, err // !ok: another server is fanning out; it announces what it adds
	}
	// The webhooks as of this transaction, not a server's memory: another
	// server may have created one a moment ago.
	hooks, err := loadHooks(ctx, tx, `WHERE enabled = 1`)
	if err != nil {
		return 0, false, fmt.Errorf("fan-out: %w", err)
	}
	ds, last, err := fn(ctx, tx, cursor, hooks)
	if err != nil {
		return 0, false, err
	}
	if last == cursor && len(ds) == 0 {
		return cursor, true, nil
	}
	const perStmt = 400 // 14 parameters a row: under both databases' limits
	for i := 0; i < len(ds); i += perStmt {
		chunk := ds[i:min(i+perStmt, len(ds))]
		args := make([]any, 0, len(chunk)*14)
		for j := range chunk {
			args = append(args, deliveryRow(&chunk[j])...)
		}
		// ON CONFLICT DO NOTHING: the unique (webhook_id, event_seq) key
		// makes a second fan-out of an event a no-op whatever happens.
		q := `INSERT INTO webhook_deliveries (` + deliveryCols + `) VALUES ` + valuesRows(len(chunk), 14) + ` ON CONFLICT DO NOTHING`
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return 0, false, fmt.Errorf("fan-out: insert deliveries: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE webhook_cursor SET seq = ? WHERE id = 1`, last); err != nil {
		return 0, false, fmt.Errorf("fan-out: advance cursor: %w", err)
	}
	if len(ds) > 0 && notify != "" {
		if err := tx.Notify(ctx, notify); err != nil {
			return 0, false, fmt.Errorf("fan-out: notify: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, false, fmt.Errorf("fan-out: commit: %w", err)
	}
	return cursor, true, nil
}

// InsertTestDelivery stores a ping, pending.
func (s *Webhooks) InsertTestDelivery(ctx context.Context, d store.NewDelivery) error {
	d.EventSeq = 0
	if _, err := s.db.ExecContext(ctx, `INSERT INTO webhook_deliveries (`+deliveryCols+`) VALUES `+valuesRows(1, 14),
		deliveryRow(&d)...); err != nil {
		return fmt.Errorf("store test delivery: %w", err)
	}
	return nil
}

// valuesRows is "(?,...),(?,...)" for rows rows of n columns.
func valuesRows(rows, n int) string {
	row := "(" + placeholders(n) + ")"
	return row + strings.Repeat(","+row, rows-1)
}

func placeholders(n int) string {
	return "?" + strings.Repeat(",?", n-1)
}

// chunks cuts s into pieces of at most n, so statements stay under the
// databases' limits on parameters.
func chunks[T any](s []T, n int) func(func([]T) bool) {
	return func(yield func([]T) bool) {
		for len(s) > 0 {
			k := min(n, len(s))
			if !yield(s[:k]) {
				return
			}
			s = s[k:]
		}
	}
}
