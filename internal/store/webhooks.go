package store

import (
	"context"
	"log/slog"
	"time"

	"github.com/sbxdev/sbx/internal/store/sqldb"
)

// The webhooks repository: registrations, the durable outbox of
// deliveries with its fan-out cursor, the per-webhook queue leases that let
// several servers share the outbox, and the attempt log. Package webhook
// holds the logic; everything here is storage, so both dialects behave
// alike (storetest.RunWebhooks).

// WebhookSecret is a signing secret; it never appears in logs or API
// responses.
type WebhookSecret string

// LogValue redacts the secret in slog output.
func (WebhookSecret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// String redacts the secret in fmt output.
func (WebhookSecret) String() string { return "[redacted]" }

// Webhook is a registration.
type Webhook struct {
	ID                  string
	TeamID              string
	Name                string
	URL                 string
	Secret              WebhookSecret
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
	PrevSecret      WebhookSecret
	PrevSecretUntil time.Time
}

// Delivery states.
const (
	DeliveryPending = "pending"
	DeliverySuccess = "success"
	DeliveryFailed  = "failed"
)

// NewDelivery is a delivery row as fan-out (or a test ping, EventSeq 0)
// creates it, pending.
type NewDelivery struct {
	ID          string
	WebhookID   string
	TeamID      string
	EventID     string
	EventSeq    int64 // 0: a test ping, part of no queue
	EventType   string
	SandboxID   string
	Body        []byte
	MaxAttempts int
	Due         time.Time
}

// PendingDelivery is what a queue holder needs to send a delivery.
type PendingDelivery struct {
	ID          string
	WebhookID   string
	EventSeq    int64
	SandboxID   string // the event's sandbox: its deliveries to a webhook go one at a time, in event order
	Attempts    int
	MaxAttempts int
	Due         time.Time
	Forced      bool // a redelivery a user asked for: goes even to a disabled webhook
	Body        []byte
}

// AttemptRecord is one finished attempt and the delivery's state after it.
type AttemptRecord struct {
	ID             string // the attempt (e2b-delivery-id)
	DeliveryID     string
	WebhookID      string
	Attempt        int
	OK             bool
	DurationMs     float64
	URL            string
	RequestHeaders string // JSON, signatures redacted
	ResponseStatus int    // 0: no answer
	ErrorClass     string // "" when OK
	ErrorMessage   string
	At             time.Time
	State          string    // the delivery's state after the attempt
	NextAttemptAt  time.Time // for State pending

	// Counters, when set, are the webhook's failure counters after the
	// attempt (ConsecutiveFailures, FailingSince); Disable, when set, is
	// why the attempt disabled the webhook.
	Counters *Webhook
	Disable  string
}

// FanOutFunc turns the events after cursor into deliveries, reading them in
// tx (the fan-out's transaction); hooks are the enabled webhooks as of tx.
// It returns the deliveries and the last event sequence number it covered
// (the new cursor; cursor itself if there were no events).
type FanOutFunc func(ctx context.Context, tx *sqldb.Tx, cursor int64, hooks []Webhook) ([]NewDelivery, int64, error)

// DeliveryFilter selects a webhook's deliveries for the log.
type DeliveryFilter struct {
	AfterRID   int64 // 0: from the start; else rows past this one in the order asked
	Ascending  bool  // oldest first (default newest first)
	Start, End time.Time
	Statuses   []string
	EventTypes []string
	Limit      int
}

// DeliveryLog is one delivery with its attempts, oldest first.
type DeliveryLog struct {
	RID           int64 // position in the log, for cursors
	ID            string
	EventID       string
	EventType     string
	SandboxID     string
	State         string
	NextAttemptAt time.Time // zero unless pending with a time set
	Body          []byte
	Attempts      []AttemptLog
}

// AttemptLog is one logged attempt.
type AttemptLog struct {
	ID             string
	DeliveryID     string
	Attempt        int
	Status         string
	DurationMs     float64
	RequestURL     string
	RequestHeaders string
	ResponseStatus int    // 0: none
	ErrorClass     string // "": none
	ErrorMessage   string
	At             time.Time
}

// AttemptStats summarises a webhook's attempts in [start, end) cut into
// buckets of equal width.
type AttemptStats struct {
	Buckets             []AttemptBucket
	Total, Failed       int
	MinMs, AvgMs, MaxMs float64
}

// AttemptBucket is one non-empty slice of AttemptStats.
type AttemptBucket struct {
	Index         int
	Total, Failed int
	AvgMs         float64
}

// Webhooks stores webhooks and their deliveries. Errors wrap errdefs
// categories (ErrNotFound for an unknown webhook or delivery).
type Webhooks interface {
	// ListWebhooks lists a team's webhooks, oldest first ("" = every team's).
	ListWebhooks(ctx context.Context, teamID string) ([]Webhook, error)
	// Webhook returns one of a team's webhooks.
	Webhook(ctx context.Context, teamID, id string) (Webhook, error)
	// CreateWebhook stores w under the fan-out cursor, so no fan-out runs
	// meanwhile: startSeq (called in the transaction) sets w.StartSeq, and
	// the webhook gets every event after it, none before. It refuses
	// (ErrResourceExhausted) when the team has maxPerTeam webhooks already.
	CreateWebhook(ctx context.Context, w *Webhook, maxPerTeam int, startSeq func(context.Context) (int64, error)) error
	// UpdateWebhook applies change to a team's webhook under the fan-out
	// cursor and stores the result, which it returns.
	UpdateWebhook(ctx context.Context, teamID, id string, change func(*Webhook) error) (Webhook, error)
	// DeleteWebhook removes a team's webhook with its deliveries and
	// attempts under the fan-out cursor; found runs once the webhook is
	// known to exist, before anything is deleted.
	DeleteWebhook(ctx context.Context, teamID, id string, found func()) error

	// WebhookCursor returns the fan-out cursor; found is false before the
	// first InitWebhookCursor.
	WebhookCursor(ctx context.Context) (seq int64, found bool, err error)
	// InitWebhookCursor sets the cursor unless it exists already.
	InitWebhookCursor(ctx context.Context, seq int64) error
	// FanOut runs fn under the fan-out cursor and stores its deliveries
	// (each (webhook, event) once: a second fan-out of an event is a
	// no-op) and the new cursor in one transaction, announcing them on
	// notify. ran is false, at once, when another server holds the cursor
	// (PostgreSQL); cursor is the cursor fn started from.
	FanOut(ctx context.Context, notify string, fn FanOutFunc) (cursor int64, ran bool, err error)

	// ClaimWebhookQueues takes, for node's process boot, the lease until
	// until of every queue with deliveries to send that is free at now or
	// already node's, and returns them. Servers claiming together skip
	// each other's rows rather than wait (FOR UPDATE SKIP LOCKED).
	ClaimWebhookQueues(ctx context.Context, node, boot string, now, until time.Time) ([]string, error)
	// ReleaseWebhookQueues ends the leases node's process boot holds.
	ReleaseWebhookQueues(ctx context.Context, node, boot string) error
	// PendingDeliveries reads in one snapshot the fan-out cursor, every
	// pending delivery of the queues fresh, and those of the queues all
	// for events after since when since >= 0 and below the cursor.
	PendingDeliveries(ctx context.Context, fresh, all []string, since int64) ([]PendingDelivery, int64, error)
	// DeliveryBody returns a delivery's request body.
	DeliveryBody(ctx context.Context, id string) ([]byte, error)
	// RecordAttempts logs finished attempts and applies their outcomes in
	// one transaction. An outcome counts only while node's process boot
	// holds the webhook's queue (test pings belong to none); attempts of
	// deliveries that are gone are not logged. For a record that disables
	// its webhook (one still enabled, whose queue node's boot holds),
	// disabled(tx, i) runs in the transaction (to append an event that
	// commits with it).
	RecordAttempts(ctx context.Context, node, boot string, recs []AttemptRecord,
		disabled func(ctx context.Context, tx *sqldb.Tx, i int) error) error
	// InsertTestDelivery stores a ping (EventSeq 0), pending.
	InsertTestDelivery(ctx context.Context, d NewDelivery) error
	// Redeliver makes a webhook's delivery, named by its id or one of its
	// attempts' ids, pending for one more attempt due at now (forced: it
	// goes even to a disabled webhook).
	Redeliver(ctx context.Context, webhookID, id string, now time.Time) (PendingDelivery, error)
	// SweepDeliveries deletes finished deliveries last updated before
	// cutoff, with their attempts, and returns how many deliveries went.
	SweepDeliveries(ctx context.Context, cutoff time.Time) (int64, error)

	// DeliveryLogs lists a team webhook's deliveries with their attempts,
	// from one snapshot.
	DeliveryLogs(ctx context.Context, teamID, webhookID string, f DeliveryFilter) ([]DeliveryLog, error)
	// AttemptStats summarises a team webhook's attempts in [start, end).
	AttemptStats(ctx context.Context, teamID, webhookID string, start, end time.Time, buckets int) (AttemptStats, error)
}
