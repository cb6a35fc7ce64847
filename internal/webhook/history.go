package webhook

import (
	"context"
	"time"

	"github.com/sbxdev/sbx/internal/store"
)

// DeliveryQuery selects deliveries for the log (§1.7 query parameters).
type DeliveryQuery struct {
	Cursor     string
	Limit      int // 1-100, default 25
	OrderAsc   bool
	Start, End time.Time // zero = unbounded; compares the delivery's creation time
	Statuses   []string  // success, failed, pending
	EventTypes []string
}

// DeliveryGroup is one event's delivery to a webhook with all its attempts.
type DeliveryGroup struct {
	DeliveryID    string     `json:"deliveryId"`
	EventID       string     `json:"eventId"`
	EventType     string     `json:"eventType"`
	SandboxID     string     `json:"sandboxId"`
	Status        string     `json:"status"` // pending, success or failed
	NextAttemptAt *time.Time `json:"nextAttemptAt"`
	Attempts      []*Attempt `json:"attempts"`
}

// DeliveryPage is the response of the deliveries log.
type DeliveryPage struct {
	Data       []*DeliveryGroup `json:"data"`
	NextCursor *string          `json:"nextCursor"`
}

// Deliveries returns a page of a webhook's deliveries, newest first unless
// q.OrderAsc.
func (e *Engine) Deliveries(ctx context.Context, teamID, webhookID string, q DeliveryQuery) (*DeliveryPage, error) {
	if q.Limit == 0 {
		q.Limit = 25
	}
	f := store.DeliveryFilter{Ascending: q.OrderAsc, Start: q.Start, End: q.End, Statuses: q.Statuses,
		EventTypes: q.EventTypes, Limit: q.Limit + 1}
	if q.Cursor != "" {
		rid, err := decodeCursor(q.Cursor)
		if err != nil {
			return nil, err
		}
		f.AfterRID = rid
	}
	logs, err := e.repo.DeliveryLogs(ctx, teamID, webhookID, f)
	if err != nil {
		return nil, err
	}
	page := &DeliveryPage{Data: []*DeliveryGroup{}}
	if len(logs) > q.Limit {
		logs = logs[:q.Limit]
		c := encodeCursor(logs[len(logs)-1].RID)
		page.NextCursor = &c
	}
	for i := range logs {
		d := &logs[i]
		g := &DeliveryGroup{DeliveryID: d.ID, EventID: d.EventID, EventType: d.EventType, SandboxID: d.SandboxID,
			Status: d.State, Attempts: make([]*Attempt, 0, len(d.Attempts))}
		if g.Status == statePending && !d.NextAttemptAt.IsZero() {
			t := d.NextAttemptAt
			g.NextAttemptAt = &t
		}
		for j := range d.Attempts {
			l := &d.Attempts[j]
			a := &Attempt{ID: l.ID, DeliveryID: l.DeliveryID, Attempt: l.Attempt, TeamID: teamID, WebhookID: webhookID,
				EventID: d.EventID, EventType: d.EventType, SandboxID: d.SandboxID, Status: l.Status, DurationMs: l.DurationMs,
				RequestBody: string(d.Body), RequestURL: l.RequestURL, Timestamp: l.At,
				// The receiver's answer is not kept.
				RequestHeaders: rawOrNull(l.RequestHeaders), ResponseHeaders: rawOrNull(""),
			}
			if l.ResponseStatus != 0 {
				n := l.ResponseStatus
				a.ResponseHTTPStatusCode = &n
			}
			if l.ErrorClass != "" {
				class, msg := l.ErrorClass, l.ErrorMessage
				a.ErrorClass, a.ErrorMessage = &class, &msg
			}
			g.Attempts = append(g.Attempts, a)
		}
		page.Data = append(page.Data, g)
	}
	return page, nil
}

// Stats is the §1.7 stats response.
type Stats struct {
	Buckets    []Bucket      `json:"buckets"`
	Total      int           `json:"total"`
	Failed     int           `json:"failed"`
	DurationMs DurationStats `json:"durationMs"`
}

// Bucket counts the attempts of one time slice.
type Bucket struct {
	Timestamp  time.Time `json:"timestamp"`
	Total      int       `json:"total"`
	Failed     int       `json:"failed"`
	DurationMs float64   `json:"durationMs"` // average
}

// DurationStats summarises attempt durations.
type DurationStats struct {
	Minimum float64 `json:"minimum"`
	Average float64 `json:"average"`
	Maximum float64 `json:"maximum"`
}

// StatsBuckets is how many slices [start, end) is cut into.
const StatsBuckets = 24

// Stats summarises a webhook's attempts in [start, end); zero times mean
// the last 24 hours.
func (e *Engine) Stats(ctx context.Context, teamID, webhookID string, start, end time.Time) (*Stats, error) {
	if end.IsZero() {
		end = e.cfg.Now()
	}
	if start.IsZero() {
		start = end.Add(-24 * time.Hour)
	}
	width := max(end.Sub(start).Nanoseconds()/StatsBuckets, 1)
	as, err := e.repo.AttemptStats(ctx, teamID, webhookID, start, end, StatsBuckets)
	if err != nil {
		return nil, err
	}
	st := &Stats{Buckets: make([]Bucket, StatsBuckets), Total: as.Total, Failed: as.Failed,
		DurationMs: DurationStats{Minimum: as.MinMs, Average: as.AvgMs, Maximum: as.MaxMs}}
	for i := range st.Buckets {
		st.Buckets[i].Timestamp = start.Add(time.Duration(int64(i) * width)).UTC()
	}
	for _, b := range as.Buckets {
		st.Buckets[b.Index] = Bucket{Timestamp: st.Buckets[b.Index].Timestamp, Total: b.Total, Failed: b.Failed, DurationMs: b.AvgMs}
	}
	return st, nil
}
