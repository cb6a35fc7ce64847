package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/store"
)

// The delivery log: what was sent to a webhook, and how it went.

// DeliveryLogs lists a team webhook's deliveries with their attempts, from
// one snapshot (so a delivery's state always matches its attempts).
func (s *Webhooks) DeliveryLogs(ctx context.Context, teamID, webhookID string, f store.DeliveryFilter) ([]store.DeliveryLog, error) {
	rtx, err := s.db.BeginTx(ctx, readOnly)
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	defer rtx.Rollback() //nolint:errcheck // read only
	if _, err := loadHook(ctx, rtx, teamID, webhookID); err != nil {
		return nil, err
	}
	where := []string{"webhook_id = ?"}
	args := []any{webhookID}
	op, order := "<", "DESC"
	if f.Ascending {
		op, order = ">", "ASC"
	}
	if f.AfterRID > 0 {
		where = append(where, "rid "+op+" ?")
		args = append(args, f.AfterRID)
	}
	if !f.Start.IsZero() {
		where = append(where, "created_at >= ?")
		args = append(args, f.Start.UnixNano())
	}
	if !f.End.IsZero() {
		where = append(where, "created_at < ?")
		args = append(args, f.End.UnixNano())
	}
	if len(f.Statuses) > 0 {
		where = append(where, "state IN ("+placeholders(len(f.Statuses))+")")
		for _, s := range f.Statuses {
			args = append(args, s)
		}
	}
	if len(f.EventTypes) > 0 {
		where = append(where, "event_type IN ("+placeholders(len(f.EventTypes))+")")
		for _, s := range f.EventTypes {
			args = append(args, s)
		}
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 25
	}
	out, err := queryAll(ctx, rtx, "list deliveries", func(r scanner) (d store.DeliveryLog, err error) {
		var next int64
		err = r.Scan(&d.RID, &d.ID, &d.EventID, &d.EventType, &d.SandboxID, &d.State, &next, &d.Body)
		d.NextAttemptAt = fromNanos(next)
		return d, err
	}, `SELECT rid, id, event_id, event_type, sandbox_id, state, next_attempt_at, body
		FROM webhook_deliveries WHERE `+strings.Join(where, " AND ")+` ORDER BY rid `+order+` LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return out, nil
	}
	byID := make(map[string]int, len(out))
	ids := make([]any, 0, len(out))
	for i := range out {
		byID[out[i].ID] = i
		ids = append(ids, out[i].ID)
	}
	arows, err := rtx.QueryContext(ctx, `SELECT id, delivery_id, attempt, status, duration_ms, request_url, request_headers,
		response_status, error_class, error_message, ts
		FROM webhook_attempts WHERE delivery_id IN (`+placeholders(len(ids))+`) ORDER BY delivery_id, attempt`, ids...)
	if err != nil {
		return nil, fmt.Errorf("list attempts: %w", err)
	}
	defer arows.Close()
	for arows.Next() {
		var a store.AttemptLog
		var respStatus sql.NullInt64
		var class, msg sql.NullString
		var ts int64
		if err := arows.Scan(&a.ID, &a.DeliveryID, &a.Attempt, &a.Status, &a.DurationMs, &a.RequestURL, &a.RequestHeaders,
			&respStatus, &class, &msg, &ts); err != nil {
			return nil, fmt.Errorf("list attempts: %w", err)
		}
		a.ResponseStatus, a.ErrorClass, a.ErrorMessage = int(respStatus.Int64), class.String, msg.String
		a.At = time.Unix(0, ts).UTC()
		d := &out[byID[a.DeliveryID]]
		d.Attempts = append(d.Attempts, a)
	}
	return out, arows.Err()
}

// AttemptStats summarises a team webhook's attempts in [start, end).
func (s *Webhooks) AttemptStats(ctx context.Context, teamID, webhookID string, start, end time.Time, buckets int) (store.AttemptStats, error) {
	var st store.AttemptStats
	if _, err := loadHook(ctx, s.db, teamID, webhookID); err != nil {
		return st, err
	}
	width := max(end.Sub(start).Nanoseconds()/int64(buckets), 1)
	rows, err := s.db.QueryContext(ctx, `SELECT (ts - ?) / ?, COUNT(*), COUNT(CASE WHEN status = 'failed' THEN 1 END), AVG(duration_ms)
		FROM webhook_attempts WHERE webhook_id = ? AND ts >= ? AND ts < ? GROUP BY 1`,
		start.UnixNano(), width, webhookID, start.UnixNano(), end.UnixNano())
	if err != nil {
		return st, fmt.Errorf("webhook stats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var b store.AttemptBucket
		if err := rows.Scan(&b.Index, &b.Total, &b.Failed, &b.AvgMs); err != nil {
			return st, fmt.Errorf("webhook stats: %w", err)
		}
		if b.Index >= 0 && b.Index < buckets {
			st.Buckets = append(st.Buckets, b)
		}
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("webhook stats: %w", err)
	}
	var mn, avg, mx sql.NullFloat64
	var failed sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*), COUNT(CASE WHEN status = 'failed' THEN 1 END), MIN(duration_ms), AVG(duration_ms), MAX(duration_ms)
		FROM webhook_attempts WHERE webhook_id = ? AND ts >= ? AND ts < ?`, webhookID, start.UnixNano(), end.UnixNano()).
		Scan(&st.Total, &failed, &mn, &avg, &mx); err != nil {
		return st, fmt.Errorf("webhook stats: %w", err)
	}
	st.Failed = int(failed.Int64)
	st.MinMs, st.AvgMs, st.MaxMs = mn.Float64, avg.Float64, mx.Float64
	return st, nil
}
