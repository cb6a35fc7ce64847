package webhook

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

const schema = `
CREATE TABLE IF NOT EXISTS webhooks (
	id                   TEXT PRIMARY KEY,
	team_id              TEXT NOT NULL,
	name                 TEXT NOT NULL,
	url                  TEXT NOT NULL,
	secret               TEXT NOT NULL,
	events               TEXT NOT NULL,
	enabled              INTEGER NOT NULL,
	created_at           INTEGER NOT NULL,
	updated_at           INTEGER NOT NULL,
	start_seq            INTEGER NOT NULL,
	disabled_reason      TEXT NOT NULL DEFAULT '',
	failing_since        INTEGER NOT NULL DEFAULT 0,
	consecutive_failures INTEGER NOT NULL DEFAULT 0,
	prev_secret          TEXT NOT NULL DEFAULT '',
	prev_secret_until    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS webhooks_team ON webhooks(team_id);
CREATE TABLE IF NOT EXISTS webhook_cursor (
	id  INTEGER PRIMARY KEY CHECK (id = 1),
	seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
	rid             INTEGER PRIMARY KEY AUTOINCREMENT,
	id              TEXT NOT NULL UNIQUE,
	webhook_id      TEXT NOT NULL,
	team_id         TEXT NOT NULL,
	event_id        TEXT NOT NULL,
	event_seq       INTEGER NOT NULL,
	event_type      TEXT NOT NULL,
	sandbox_id      TEXT NOT NULL,
	body            BLOB NOT NULL,
	state           TEXT NOT NULL,
	attempts        INTEGER NOT NULL DEFAULT 0,
	max_attempts    INTEGER NOT NULL,
	next_attempt_at INTEGER NOT NULL,
	created_at      INTEGER NOT NULL,
	updated_at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_pending ON webhook_deliveries(state, webhook_id);
CREATE INDEX IF NOT EXISTS webhook_deliveries_webhook ON webhook_deliveries(webhook_id, rid);
CREATE INDEX IF NOT EXISTS webhook_deliveries_updated ON webhook_deliveries(updated_at);
CREATE TABLE IF NOT EXISTS webhook_attempts (
	id               TEXT PRIMARY KEY,
	delivery_id      TEXT NOT NULL,
	webhook_id       TEXT NOT NULL,
	attempt          INTEGER NOT NULL,
	status           TEXT NOT NULL,
	duration_ms      REAL NOT NULL,
	request_url      TEXT NOT NULL,
	request_headers  TEXT NOT NULL,
	response_status  INTEGER,
	response_headers TEXT,
	response_body    TEXT,
	error_class      TEXT,
	error_message    TEXT,
	ts               INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_attempts_delivery ON webhook_attempts(delivery_id);
CREATE INDEX IF NOT EXISTS webhook_attempts_webhook_ts ON webhook_attempts(webhook_id, ts);
`

// Migrate creates the webhook tables if they do not exist. NewEngine calls it.
func Migrate(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("migrate webhooks: %w", err)
	}
	// Columns added after the first version of the table.
	for _, col := range []string{
		"prev_secret TEXT NOT NULL DEFAULT ''",
		"prev_secret_until INTEGER NOT NULL DEFAULT 0",
	} {
		name, _, _ := strings.Cut(col, " ")
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_table_info('webhooks') WHERE name = ?`, name).Scan(&n); err != nil {
			return fmt.Errorf("migrate webhooks: %w", err)
		}
		if n == 0 {
			if _, err := db.ExecContext(ctx, `ALTER TABLE webhooks ADD COLUMN `+col); err != nil {
				return fmt.Errorf("migrate webhooks: add %s: %w", name, err)
			}
		}
	}
	// Receivers' answers are no longer kept; drop those an earlier version
	// stored (the columns stay, NULL, for older readers of the database).
	if _, err := db.ExecContext(ctx, `UPDATE webhook_attempts SET response_body = NULL, response_headers = NULL
		WHERE response_body IS NOT NULL OR response_headers IS NOT NULL`); err != nil {
		return fmt.Errorf("migrate webhooks: drop stored responses: %w", err)
	}
	return nil
}

// Delivery states.
const (
	statePending = "pending"
	stateSuccess = "success"
	stateFailed  = "failed"
)

// Error classes of the attempt log (protocol doc §1.7 WebhookDelivery.errorClass).
const (
	classHTTP      = "http_error"
	classDNS       = "dns_error"
	classTimeout   = "timeout"
	classTransport = "transport_error"
	classRequest   = "request_error"
	classCanceled  = "canceled"
)

// Secret is a signing secret; it never appears in logs or API responses.
type Secret string

// LogValue redacts the secret in slog output.
func (Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// String redacts the secret in fmt output.
func (Secret) String() string { return "[redacted]" }

// Webhook is a registration.
type Webhook struct {
	ID                  string
	TeamID              string
	Name                string
	URL                 string
	Secret              Secret
	Events              []string
	Enabled             bool
	CreatedAt           time.Time
	UpdatedAt           time.Time
	StartSeq            int64 // only events after this sequence number are delivered
	DisabledReason      string
	FailingSince        time.Time
	ConsecutiveFailures int
	// After a secret change the old secret also signs webhook-signature
	// until PrevSecretUntil, so receivers can switch without dropping
	// deliveries (Standard Webhooks allows several signatures).
	PrevSecret      Secret
	PrevSecretUntil time.Time
}

func (w *Webhook) wants(eventType string) bool {
	for _, t := range w.Events {
		if t == eventType {
			return true
		}
	}
	return false
}

const hookColumns = `id, team_id, name, url, secret, events, enabled, created_at, updated_at, start_seq, disabled_reason, failing_since, consecutive_failures, prev_secret, prev_secret_until`

type rowScanner interface{ Scan(dest ...any) error }

func scanHook(r rowScanner) (*Webhook, error) {
	var w Webhook
	var secret, prev, evs string
	var created, updated, failing, prevUntil int64
	if err := r.Scan(&w.ID, &w.TeamID, &w.Name, &w.URL, &secret, &evs, &w.Enabled, &created, &updated,
		&w.StartSeq, &w.DisabledReason, &failing, &w.ConsecutiveFailures, &prev, &prevUntil); err != nil {
		return nil, err
	}
	w.Secret, w.PrevSecret = Secret(secret), Secret(prev)
	if prevUntil != 0 {
		w.PrevSecretUntil = time.Unix(0, prevUntil).UTC()
	}
	if err := json.Unmarshal([]byte(evs), &w.Events); err != nil {
		return nil, fmt.Errorf("webhook %s: decode events: %w", w.ID, err)
	}
	w.CreatedAt, w.UpdatedAt = time.Unix(0, created).UTC(), time.Unix(0, updated).UTC()
	if failing != 0 {
		w.FailingSince = time.Unix(0, failing).UTC()
	}
	return &w, nil
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func loadHooks(ctx context.Context, q queryer, where string, args ...any) ([]*Webhook, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+hookColumns+` FROM webhooks `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("load webhooks: %w", err)
	}
	defer rows.Close()
	var out []*Webhook
	for rows.Next() {
		w, err := scanHook(rows)
		if err != nil {
			return nil, fmt.Errorf("load webhooks: %w", err)
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

func loadHook(ctx context.Context, q queryer, teamID, id string) (*Webhook, error) {
	w, err := scanHook(q.QueryRowContext(ctx, `SELECT `+hookColumns+` FROM webhooks WHERE id = ? AND team_id = ?`, id, teamID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errNotFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("load webhook %s: %w", id, err)
	}
	return w, nil
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func saveHook(ctx context.Context, x execer, w *Webhook) error {
	evs, _ := json.Marshal(w.Events)
	var failing, prevUntil int64
	if !w.FailingSince.IsZero() {
		failing = w.FailingSince.UnixNano()
	}
	if !w.PrevSecretUntil.IsZero() {
		prevUntil = w.PrevSecretUntil.UnixNano()
	}
	_, err := x.ExecContext(ctx, `INSERT INTO webhooks (`+hookColumns+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT(id) DO UPDATE SET name=excluded.name, url=excluded.url, secret=excluded.secret,
		events=excluded.events, enabled=excluded.enabled, updated_at=excluded.updated_at,
		disabled_reason=excluded.disabled_reason, failing_since=excluded.failing_since,
		consecutive_failures=excluded.consecutive_failures, prev_secret=excluded.prev_secret,
		prev_secret_until=excluded.prev_secret_until`,
		w.ID, w.TeamID, w.Name, w.URL, string(w.Secret), string(evs), w.Enabled, w.CreatedAt.UnixNano(),
		w.UpdatedAt.UnixNano(), w.StartSeq, w.DisabledReason, failing, w.ConsecutiveFailures,
		string(w.PrevSecret), prevUntil)
	if err != nil {
		return fmt.Errorf("save webhook %s: %w", w.ID, err)
	}
	return nil
}
