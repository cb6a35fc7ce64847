// Package events owns sbx's durable event log: sandbox lifecycle, template
// build, budget and webhook events, stored in SQLite and read by sequence
// number so that subscribers (the SSE stream, the webhook engine) lose
// nothing across restarts.
//
// Wiring (in the app package):
//
//	db, err := sqldb.Open(ctx, dsn, sqldb.Options{}) // migrated: the events table exists
//	evlog := events.NewLog(db, logger.With("component", "events"))
//	// state change + event in one transaction:
//	tx, _ := db.BeginTx(ctx, nil)
//	... update sandbox row ...
//	evlog.AppendTx(ctx, tx, &events.Event{Type: events.SandboxKilled, TeamID: t, SandboxID: id,
//		EventData: map[string]any{"kill_reason": "request"}})
//	tx.Commit(); evlog.Notify()
//	// REST + SSE:
//	events.NewHandler(evlog, logger).Register(mux)
package events

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/sbxdev/sbx/internal/store/sqldb"
)

// Event types. The sandbox lifecycle types match E2B's names.
const (
	SandboxCreated = "sandbox.lifecycle.created"
	SandboxKilled  = "sandbox.lifecycle.killed"
	SandboxUpdated = "sandbox.lifecycle.updated"
	SandboxPaused  = "sandbox.lifecycle.paused"
	SandboxResumed = "sandbox.lifecycle.resumed"

	TemplateBuildStarted   = "template.build.started"
	TemplateBuildSucceeded = "template.build.succeeded"
	TemplateBuildFailed    = "template.build.failed"

	TeamBudgetExceeded     = "team.budget.exceeded"
	TeamBudgetWarning      = "team.budget.warning"
	SandboxRunawayDetected = "sandbox.runaway.detected"
	WebhookDisabled        = "webhook.disabled"
)

// Types lists every event type, in documentation order. Webhooks may
// subscribe to any of them.
var Types = []string{
	SandboxCreated, SandboxKilled, SandboxUpdated, SandboxPaused, SandboxResumed,
	TemplateBuildStarted, TemplateBuildSucceeded, TemplateBuildFailed,
	TeamBudgetExceeded, TeamBudgetWarning, SandboxRunawayDetected, WebhookDisabled,
}

// KnownType reports whether t is one of Types.
func KnownType(t string) bool {
	for _, k := range Types {
		if k == t {
			return true
		}
	}
	return false
}

// CurrentVersion is the event schema version stamped on new events.
const CurrentVersion = "v2"

// Event is one entry of the log.
type Event struct {
	Seq                int64 // position in the log, assigned on append; strictly increasing in commit order
	ID                 string
	Version            string
	Type               string
	TeamID             string
	SandboxID          string
	SandboxTemplateID  string
	SandboxBuildID     string
	SandboxExecutionID string
	EventData          map[string]any
	Timestamp          time.Time
}

// JSON is the camelCase shape of an event shared by the REST API, the SSE
// stream and webhook bodies (protocol doc §1.7 SandboxEvent / §5.2 variant 3).
type JSON struct {
	ID                 string         `json:"id"`
	Version            string         `json:"version"`
	Type               string         `json:"type"`
	EventData          map[string]any `json:"eventData"`
	SandboxID          string         `json:"sandboxId"`
	SandboxTemplateID  string         `json:"sandboxTemplateId"`
	SandboxBuildID     string         `json:"sandboxBuildId"`
	SandboxExecutionID string         `json:"sandboxExecutionId"`
	SandboxTeamID      string         `json:"sandboxTeamId"`
	Timestamp          string         `json:"timestamp"`
}

// ToJSON returns the wire shape of ev. eventData is always an object, never
// null: receivers written like the seed's call event.get("eventData", {})
// and then read keys from it.
func (ev *Event) ToJSON() JSON {
	data := ev.EventData
	if data == nil {
		data = map[string]any{}
	}
	return JSON{
		ID: ev.ID, Version: ev.Version, Type: ev.Type, EventData: data,
		SandboxID: ev.SandboxID, SandboxTemplateID: ev.SandboxTemplateID,
		SandboxBuildID: ev.SandboxBuildID, SandboxExecutionID: ev.SandboxExecutionID,
		SandboxTeamID: ev.TeamID, Timestamp: ev.Timestamp.UTC().Format(time.RFC3339Nano),
	}
}

// Log appends and reads events. It is safe for concurrent use.
type Log struct {
	db  *sqldb.DB
	log *slog.Logger
	now func() time.Time

	mu      sync.Mutex
	changed chan struct{} // closed and replaced by Notify
}

// NewLog returns a log over db (opened, so migrated, by sqldb.Open).
func NewLog(db *sqldb.DB, log *slog.Logger) *Log {
	return &Log{db: db, log: log, now: time.Now, changed: make(chan struct{})}
}

// SetClock replaces the clock used to stamp events (tests).
func (l *Log) SetClock(now func() time.Time) { l.now = now }

// DB returns the database the log writes to, for packages that keep their
// own tables next to it (the webhook engine).
func (l *Log) DB() *sqldb.DB { return l.db }

// AppendTx inserts ev inside the caller's transaction, filling ID, Version,
// Timestamp and Seq. The caller commits, then calls Notify.
func (l *Log) AppendTx(ctx context.Context, tx *sqldb.Tx, ev *Event) error {
	if ev.Type == "" {
		return fmt.Errorf("append event: empty type")
	}
	if ev.ID == "" {
		ev.ID = uuid.NewString()
	}
	if ev.Version == "" {
		ev.Version = CurrentVersion
	}
	if ev.Timestamp.IsZero() {
		ev.Timestamp = l.now().UTC()
	}
	var data any // NULL when empty, so eventData is JSON null
	if len(ev.EventData) > 0 {
		b, err := json.Marshal(ev.EventData)
		if err != nil {
			return fmt.Errorf("append event %s: encode eventData: %w", ev.Type, err)
		}
		data = string(b)
	}
	if tx.Dialect() == sqldb.Postgres {
		// Readers follow the log by seq (SSE Last-Event-ID, the webhook
		// cursor), so seq order must be commit order. A sequence alone does
		// not give that: a transaction that drew seq 10 can commit after one
		// that drew 11, and a reader already past 11 would skip 10 for good.
		// This lock, held to commit, makes event-writing transactions draw
		// and commit one after the other from their first append (appends
		// come last in their transactions, so the section is short). On
		// SQLite the database lock already does this.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?)`, appendLock); err != nil {
			return fmt.Errorf("append event %s: lock: %w", ev.Type, err)
		}
		if err := tx.Notify(ctx, NotifyChannel); err != nil {
			return fmt.Errorf("append event %s: notify: %w", ev.Type, err)
		}
	}
	err := tx.QueryRowContext(ctx, `INSERT INTO events
		(id, version, type, team_id, sandbox_id, template_id, build_id, execution_id, event_data, ts)
		VALUES (?,?,?,?,?,?,?,?,?,?) RETURNING seq`,
		ev.ID, ev.Version, ev.Type, ev.TeamID, ev.SandboxID, ev.SandboxTemplateID,
		ev.SandboxBuildID, ev.SandboxExecutionID, data, ev.Timestamp.UnixNano()).Scan(&ev.Seq)
	if err != nil {
		return fmt.Errorf("append event %s: %w", ev.Type, err)
	}
	return nil
}

// Append stores ev in its own transaction and wakes subscribers.
func (l *Log) Append(ctx context.Context, ev *Event) error {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("append event: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	if err := l.AppendTx(ctx, tx, ev); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("append event %s: commit: %w", ev.Type, err)
	}
	l.Notify()
	return nil
}

// appendLock is the advisory lock key that serializes appends on
// PostgreSQL ("sbxevent" in ASCII).
const appendLock int64 = 0x7362786576656e74

// NotifyChannel is the PostgreSQL channel on which appends announce
// themselves to every server sharing the database.
const NotifyChannel = "sbx_events"

// Follow wakes this log's subscribers (SSE streams, the webhook engine)
// when another server sharing the database appends events, until ctx ends.
// On SQLite, where one server owns the database, it returns at once.
func (l *Log) Follow(ctx context.Context) error {
	return l.db.Listen(ctx, NotifyChannel, l.Notify)
}

// Notify wakes every subscriber waiting on Changed. Call it after the
// transaction holding new events commits.
func (l *Log) Notify() {
	l.mu.Lock()
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// Changed returns a channel closed at the next Notify. Take it before
// reading with After, then wait on it if nothing was new: no wake-up is lost.
func (l *Log) Changed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

// Filter selects events for List and After.
type Filter struct {
	TeamID    string   // required for client-facing reads; empty = all teams (internal)
	SandboxID string   // optional
	Types     []string // optional; any of
	Offset    int
	Limit     int // 0 = 100
	OrderAsc  bool
}

func (f Filter) where(args []any) (string, []any) {
	var conds []string
	if f.TeamID != "" {
		conds = append(conds, "team_id = ?")
		args = append(args, f.TeamID)
	}
	if f.SandboxID != "" {
		conds = append(conds, "sandbox_id = ?")
		args = append(args, f.SandboxID)
	}
	if len(f.Types) > 0 {
		conds = append(conds, "type IN (?"+strings.Repeat(",?", len(f.Types)-1)+")")
		for _, t := range f.Types {
			args = append(args, t)
		}
	}
	if len(conds) == 0 {
		return "", args
	}
	return " AND " + strings.Join(conds, " AND "), args
}

const columns = `seq, id, version, type, team_id, sandbox_id, template_id, build_id, execution_id, event_data, ts`

// List returns events matching f, newest first unless f.OrderAsc.
func (l *Log) List(ctx context.Context, f Filter) ([]Event, error) {
	where, args := f.where(nil)
	order := "DESC"
	if f.OrderAsc {
		order = "ASC"
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	q := `SELECT ` + columns + ` FROM events WHERE 1=1` + where + ` ORDER BY seq ` + order + ` LIMIT ? OFFSET ?`
	return l.query(ctx, q, append(args, f.Limit, f.Offset)...)
}

// After returns up to limit events with Seq > after, oldest first, matching
// f's team, sandbox and types (f's paging fields are ignored).
func (l *Log) After(ctx context.Context, after int64, limit int, f Filter) ([]Event, error) {
	return l.AfterIn(ctx, l.db, after, limit, f)
}

// AfterIn is After run on q, e.g. a read transaction that also reads other
// tables, for a consistent snapshot.
func (l *Log) AfterIn(ctx context.Context, q Queryer, after int64, limit int, f Filter) ([]Event, error) {
	where, args := f.where([]any{after})
	if limit <= 0 {
		limit = 100
	}
	stmt := `SELECT ` + columns + ` FROM events WHERE seq > ?` + where + ` ORDER BY seq ASC LIMIT ?`
	return queryEvents(ctx, q, stmt, append(args, limit)...)
}

// LastSeq returns the highest sequence number in the log (0 when empty).
func (l *Log) LastSeq(ctx context.Context) (int64, error) {
	var seq sql.NullInt64
	if err := l.db.QueryRowContext(ctx, `SELECT MAX(seq) FROM events`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("last event seq: %w", err)
	}
	return seq.Int64, nil
}

// Wait blocks until an event with Seq > after and matching f exists or ctx
// ends, and returns up to limit of them.
func (l *Log) Wait(ctx context.Context, after int64, limit int, f Filter) ([]Event, error) {
	for {
		ch := l.Changed()
		evs, err := l.After(ctx, after, limit, f)
		if err != nil || len(evs) > 0 {
			return evs, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		}
	}
}

// Queryer is *sqldb.DB or *sqldb.Tx.
type Queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func (l *Log) query(ctx context.Context, q string, args ...any) ([]Event, error) {
	return queryEvents(ctx, l.db, q, args...)
}

func queryEvents(ctx context.Context, db Queryer, q string, args ...any) ([]Event, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var ev Event
		var data sql.NullString
		var ts int64
		if err := rows.Scan(&ev.Seq, &ev.ID, &ev.Version, &ev.Type, &ev.TeamID, &ev.SandboxID,
			&ev.SandboxTemplateID, &ev.SandboxBuildID, &ev.SandboxExecutionID, &data, &ts); err != nil {
			return nil, fmt.Errorf("read events: %w", err)
		}
		if data.Valid {
			if err := json.Unmarshal([]byte(data.String), &ev.EventData); err != nil {
				return nil, fmt.Errorf("read event %s: decode eventData: %w", ev.ID, err)
			}
		}
		ev.Timestamp = time.Unix(0, ts).UTC()
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	return out, nil
}
