package webhook

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
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
	// One read transaction: deliveries and attempts from the same snapshot,
	// so a delivery's status always matches its attempts.
	rtx, err := e.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	defer rtx.Rollback() //nolint:errcheck // read only
	if _, err := loadHook(ctx, rtx, teamID, webhookID); err != nil {
		return nil, err
	}
	if q.Limit == 0 {
		q.Limit = 25
	}
	where := []string{"webhook_id = ?"}
	args := []any{webhookID}
	op, order := "<", "DESC"
	if q.OrderAsc {
		op, order = ">", "ASC"
	}
	if q.Cursor != "" {
		rid, err := decodeCursor(q.Cursor)
		if err != nil {
			return nil, err
		}
		where = append(where, "rid "+op+" ?")
		args = append(args, rid)
	}
	if !q.Start.IsZero() {
		where = append(where, "created_at >= ?")
		args = append(args, q.Start.UnixNano())
	}
	if !q.End.IsZero() {
		where = append(where, "created_at < ?")
		args = append(args, q.End.UnixNano())
	}
	if len(q.Statuses) > 0 {
		where = append(where, "state IN (?"+strings.Repeat(",?", len(q.Statuses)-1)+")")
		for _, s := range q.Statuses {
			args = append(args, s)
		}
	}
	if len(q.EventTypes) > 0 {
		where = append(where, "event_type IN (?"+strings.Repeat(",?", len(q.EventTypes)-1)+")")
		for _, s := range q.EventTypes {
			args = append(args, s)
		}
	}
	rows, err := rtx.QueryContext(ctx, `SELECT rid, id, event_id, event_type, sandbox_id, state, next_attempt_at, body
		FROM webhook_deliveries WHERE `+strings.Join(where, " AND ")+` ORDER BY rid `+order+` LIMIT ?`, append(args, q.Limit+1)...)
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	page := &DeliveryPage{Data: []*DeliveryGroup{}}
	byID := map[string]*DeliveryGroup{}
	bodies := map[string]string{}
	var lastRID int64
	for rows.Next() {
		var g DeliveryGroup
		var rid, next int64
		var body []byte
		if err := rows.Scan(&rid, &g.DeliveryID, &g.EventID, &g.EventType, &g.SandboxID, &g.Status, &next, &body); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list deliveries: %w", err)
		}
		if len(page.Data) == q.Limit {
			c := encodeCursor(lastRID)
			page.NextCursor = &c
			break
		}
		if g.Status == statePending && next != 0 {
			t := time.Unix(0, next).UTC()
			g.NextAttemptAt = &t
		}
		g.Attempts = []*Attempt{}
		lastRID = rid
		page.Data = append(page.Data, &g)
		byID[g.DeliveryID] = &g
		bodies[g.DeliveryID] = string(body)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	if len(page.Data) == 0 {
		return page, nil
	}
	ids := make([]any, 0, len(page.Data))
	for _, g := range page.Data {
		ids = append(ids, g.DeliveryID)
	}
	arows, err := rtx.QueryContext(ctx, `SELECT id, delivery_id, attempt, status, duration_ms, request_url, request_headers,
		response_status, error_class, error_message, ts
		FROM webhook_attempts WHERE delivery_id IN (?`+strings.Repeat(",?", len(ids)-1)+`) ORDER BY delivery_id, attempt`, ids...)
	if err != nil {
		return nil, fmt.Errorf("list attempts: %w", err)
	}
	defer arows.Close()
	for arows.Next() {
		a := &Attempt{TeamID: teamID, WebhookID: webhookID}
		var reqH string
		var respStatus sql.NullInt64
		var class, msg sql.NullString
		var ts int64
		if err := arows.Scan(&a.ID, &a.DeliveryID, &a.Attempt, &a.Status, &a.DurationMs, &a.RequestURL, &reqH,
			&respStatus, &class, &msg, &ts); err != nil {
			return nil, fmt.Errorf("list attempts: %w", err)
		}
		g := byID[a.DeliveryID]
		a.EventID, a.EventType, a.SandboxID, a.RequestBody = g.EventID, g.EventType, g.SandboxID, bodies[a.DeliveryID]
		a.RequestHeaders, a.ResponseHeaders = rawOrNull(reqH), rawOrNull("") // the receiver's answer is not kept
		if respStatus.Valid {
			n := int(respStatus.Int64)
			a.ResponseHTTPStatusCode = &n
		}
		if class.Valid {
			a.ErrorClass, a.ErrorMessage = &class.String, &msg.String
		}
		a.Timestamp = time.Unix(0, ts).UTC()
		g.Attempts = append(g.Attempts, a)
	}
	return page, arows.Err()
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
	if _, err := loadHook(ctx, e.db, teamID, webhookID); err != nil {
		return nil, err
	}
	if end.IsZero() {
		end = e.cfg.Now()
	}
	if start.IsZero() {
		start = end.Add(-24 * time.Hour)
	}
	width := max(end.Sub(start).Nanoseconds()/StatsBuckets, 1)
	st := &Stats{Buckets: make([]Bucket, StatsBuckets)}
	for i := range st.Buckets {
		st.Buckets[i].Timestamp = start.Add(time.Duration(int64(i) * width)).UTC()
	}
	rows, err := e.db.QueryContext(ctx, `SELECT (ts - ?) / ?, COUNT(*), COUNT(CASE WHEN status = 'failed' THEN 1 END), AVG(duration_ms)
		FROM webhook_attempts WHERE webhook_id = ? AND ts >= ? AND ts < ? GROUP BY 1`,
		start.UnixNano(), width, webhookID, start.UnixNano(), end.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("webhook stats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var i int64
		var b Bucket
		if err := rows.Scan(&i, &b.Total, &b.Failed, &b.DurationMs); err != nil {
			return nil, fmt.Errorf("webhook stats: %w", err)
		}
		if i >= 0 && i < StatsBuckets {
			b.Timestamp = st.Buckets[i].Timestamp
			st.Buckets[i] = b
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("webhook stats: %w", err)
	}
	var mn, avg, mx sql.NullFloat64
	var failed sql.NullInt64
	if err := e.db.QueryRowContext(ctx, `SELECT COUNT(*), COUNT(CASE WHEN status = 'failed' THEN 1 END), MIN(duration_ms), AVG(duration_ms), MAX(duration_ms)
		FROM webhook_attempts WHERE webhook_id = ? AND ts >= ? AND ts < ?`, webhookID, start.UnixNano(), end.UnixNano()).
		Scan(&st.Total, &failed, &mn, &avg, &mx); err != nil {
		return nil, fmt.Errorf("webhook stats: %w", err)
	}
	st.Failed = int(failed.Int64)
	st.DurationMs = DurationStats{Minimum: mn.Float64, Average: avg.Float64, Maximum: mx.Float64}
	return st, nil
}
