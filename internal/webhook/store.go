package webhook

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

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
