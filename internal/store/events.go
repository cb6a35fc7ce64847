package store

import (
	"context"
	"time"

	"github.com/sbxdev/sbx/internal/store/sqldb"
)

// Event is one entry of the durable event log (package events' Event, which
// adds the wire format).
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

// EventFilter selects events.
type EventFilter struct {
	TeamID    string   // required for client-facing reads; empty = all teams (internal)
	SandboxID string   // optional
	Types     []string // optional; any of
	Offset    int
	Limit     int // 0 = 100
	OrderAsc  bool
}

// EventsChannel is the notification channel on which appends announce
// themselves to every server sharing a PostgreSQL database.
const EventsChannel = "sbx_events"

// Events is the event log's repository (package events). Readers follow
// the log by Seq (SSE Last-Event-ID, the webhook engine's cursor), so Seq
// order must be commit order on every implementation: a reader that has
// seen Seq n never later finds a newly committed event below n.
type Events interface {
	// AppendEvent inserts ev, filling ev.Seq; the caller fills ID,
	// Version, Type and Timestamp. With a transaction the event commits
	// with it (and, on PostgreSQL, a notification on EventsChannel goes
	// out when it does); with tx nil it is appended in a transaction of
	// its own.
	AppendEvent(ctx context.Context, tx *sqldb.Tx, ev *Event) error
	// ListEvents returns the events matching f, newest first unless
	// f.OrderAsc, paged by f.Offset and f.Limit.
	ListEvents(ctx context.Context, f EventFilter) ([]Event, error)
	// EventsAfter returns up to limit (0 = 100) events with Seq > after,
	// oldest first, matching f's team, sandbox and types (its paging
	// fields are ignored). With a transaction it reads in it, so a caller
	// sees the log and its other tables in one snapshot.
	EventsAfter(ctx context.Context, tx *sqldb.Tx, after int64, limit int, f EventFilter) ([]Event, error)
	// LastEventSeq returns the highest Seq in the log (0 when empty).
	LastEventSeq(ctx context.Context) (int64, error)
	// HasEvent reports whether an event with this ID is stored.
	HasEvent(ctx context.Context, id string) (bool, error)
	// LatestEventTeam returns the team of the newest event that names one
	// ("" when none does).
	LatestEventTeam(ctx context.Context) (string, error)
	// FollowEvents calls fn after every append made by any server sharing
	// the database, and once after each (re)connection, until ctx ends.
	// Where one server owns the database (SQLite) it returns at once: that
	// server wakes its readers itself.
	FollowEvents(ctx context.Context, fn func()) error
}
