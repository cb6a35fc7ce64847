// Package events owns sbx's durable event log: sandbox lifecycle, template
// build, budget and webhook events, stored through the store's events
// repository (store.Events: SQLite, or PostgreSQL shared by several
// servers) and read by sequence number so that subscribers (the SSE
// stream, the webhook engine) lose nothing across restarts.
//
// Wiring (in the app package):
//
//	db, err := sqldb.Open(ctx, dsn, sqldb.Options{}) // migrated: the events table exists
//	evlog := events.New(sqlstore.New(db, nil), logger.With("component", "events"))
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
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
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

// Event is one entry of the log: the stored event (see store.Event for its
// fields) with its wire format.
type Event store.Event

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
	repo store.Events
	log  *slog.Logger
	now  func() time.Time

	mu      sync.Mutex
	changed chan struct{} // closed and replaced by Notify
}

// New returns a log over repo.
func New(repo store.Events, log *slog.Logger) *Log {
	return &Log{repo: repo, log: log, now: time.Now, changed: make(chan struct{})}
}

// NewLog returns a log over db (opened, so migrated, by sqldb.Open) through
// the SQL store's events repository.
func NewLog(db *sqldb.DB, log *slog.Logger) *Log { return New(sqlstore.New(db, nil), log) }

// SetClock replaces the clock used to stamp events (tests).
func (l *Log) SetClock(now func() time.Time) { l.now = now }

// fill sets the fields the log assigns on append.
func (l *Log) fill(ev *Event) error {
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
	return nil
}

// AppendTx inserts ev inside the caller's transaction, filling ID, Version,
// Timestamp and Seq. The caller commits, then calls Notify.
func (l *Log) AppendTx(ctx context.Context, tx *sqldb.Tx, ev *Event) error {
	if tx == nil {
		return fmt.Errorf("append event %s: no transaction", ev.Type)
	}
	if err := l.fill(ev); err != nil {
		return err
	}
	return l.repo.AppendEvent(ctx, tx, (*store.Event)(ev))
}

// Append stores ev in its own transaction and wakes subscribers.
func (l *Log) Append(ctx context.Context, ev *Event) error {
	if err := l.fill(ev); err != nil {
		return err
	}
	if err := l.repo.AppendEvent(ctx, nil, (*store.Event)(ev)); err != nil {
		return err
	}
	l.Notify()
	return nil
}

// NotifyChannel is the PostgreSQL channel on which appends announce
// themselves to every server sharing the database.
const NotifyChannel = store.EventsChannel

// Follow wakes this log's subscribers (SSE streams, the webhook engine)
// when another server sharing the database appends events, until ctx ends.
// On SQLite, where one server owns the database, it returns at once.
func (l *Log) Follow(ctx context.Context) error {
	return l.repo.FollowEvents(ctx, l.Notify)
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
type Filter = store.EventFilter

// List returns events matching f, newest first unless f.OrderAsc.
func (l *Log) List(ctx context.Context, f Filter) ([]Event, error) {
	evs, err := l.repo.ListEvents(ctx, f)
	return fromStore(evs), err
}

// After returns up to limit events with Seq > after, oldest first, matching
// f's team, sandbox and types (f's paging fields are ignored).
func (l *Log) After(ctx context.Context, after int64, limit int, f Filter) ([]Event, error) {
	return l.AfterIn(ctx, nil, after, limit, f)
}

// AfterIn is After run in tx, e.g. a transaction that also reads other
// tables, for a consistent snapshot (nil: outside any transaction).
func (l *Log) AfterIn(ctx context.Context, tx *sqldb.Tx, after int64, limit int, f Filter) ([]Event, error) {
	evs, err := l.repo.EventsAfter(ctx, tx, after, limit, f)
	return fromStore(evs), err
}

// LastSeq returns the highest sequence number in the log (0 when empty).
func (l *Log) LastSeq(ctx context.Context) (int64, error) { return l.repo.LastEventSeq(ctx) }

// Has reports whether an event with this ID is stored (ingested webhook
// deliveries are retried with the same event ID).
func (l *Log) Has(ctx context.Context, id string) (bool, error) { return l.repo.HasEvent(ctx, id) }

// LatestTeam returns the team of the newest event that names one ("" when
// none does).
func (l *Log) LatestTeam(ctx context.Context) (string, error) { return l.repo.LatestEventTeam(ctx) }

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

func fromStore(evs []store.Event) []Event {
	if evs == nil {
		return nil
	}
	out := make([]Event, len(evs))
	for i := range evs {
		out[i] = Event(evs[i])
	}
	return out
}
