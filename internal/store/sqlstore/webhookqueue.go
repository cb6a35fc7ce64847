package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
)

// Webhook queues: each webhook's pending deliveries form one queue, leased
// by one server at a time (webhooks.lease_node/lease_boot/lease_until).

// ClaimWebhookQueues takes the leases of the queues with deliveries to send
// that are free or already node's (see store.Webhooks).
func (s *Webhooks) ClaimWebhookQueues(ctx context.Context, node, boot string, now, until time.Time) ([]string, error) {
	var held []string
	err := s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		held = held[:0]
		lock := ""
		if tx.Dialect() == sqldb.Postgres {
			// Servers claiming together never wait on each other or take
			// the same queue.
			lock = " FOR UPDATE OF w SKIP LOCKED"
		}
		rows, err := tx.QueryContext(ctx, `SELECT w.id FROM webhooks w WHERE (w.lease_until < ? OR w.lease_node = ?)
			AND EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.state = 'pending'
				AND d.event_seq > 0 AND (w.enabled = 1 OR d.forced = 1))`+lock, now.UnixNano(), node)
		if err != nil {
			return fmt.Errorf("select queues: %w", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			held = append(held, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for chunk := range chunks(held, 500) {
			args := []any{node, boot, until.UnixNano()}
			for _, id := range chunk {
				args = append(args, id)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE webhooks SET lease_node = ?, lease_boot = ?, lease_until = ? WHERE id IN (`+
				placeholders(len(chunk))+`)`, args...); err != nil {
				return fmt.Errorf("take leases: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim webhook queues: %w", err)
	}
	return held, nil
}

// ReleaseWebhookQueues ends the leases node's process boot holds.
func (s *Webhooks) ReleaseWebhookQueues(ctx context.Context, node, boot string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE webhooks SET lease_until = 0 WHERE lease_node = ? AND lease_boot = ?`,
		node, boot); err != nil {
		return fmt.Errorf("release webhook queues: %w", err)
	}
	return nil
}

var readOnly = &sql.TxOptions{ReadOnly: true}

// PendingDeliveries reads the cursor and pending deliveries in one snapshot
// (see store.Webhooks).
func (s *Webhooks) PendingDeliveries(ctx context.Context, fresh, all []string, since int64) ([]store.PendingDelivery, int64, error) {
	rtx, err := s.db.BeginTx(ctx, readOnly)
	if err != nil {
		return nil, 0, fmt.Errorf("load deliveries: %w", err)
	}
	defer rtx.Rollback() //nolint:errcheck // read only
	var cursor int64
	if err := rtx.QueryRowContext(ctx, `SELECT seq FROM webhook_cursor WHERE id = 1`).Scan(&cursor); err != nil {
		return nil, 0, fmt.Errorf("load deliveries: cursor: %w", err)
	}
	var out []store.PendingDelivery
	read := func(ids []string, cond string, args ...any) error {
		for chunk := range chunks(ids, 500) {
			a := append([]any{}, args...)
			for _, id := range chunk {
				a = append(a, id)
			}
			rows, err := rtx.QueryContext(ctx, `SELECT id, webhook_id, event_seq, sandbox_id, attempts, max_attempts, next_attempt_at, forced, body
				FROM webhook_deliveries WHERE state = 'pending' AND `+cond+` AND webhook_id IN (`+placeholders(len(chunk))+`)`, a...)
			if err != nil {
				return fmt.Errorf("load deliveries: %w", err)
			}
			for rows.Next() {
				var d store.PendingDelivery
				var due int64
				if err := rows.Scan(&d.ID, &d.WebhookID, &d.EventSeq, &d.SandboxID, &d.Attempts, &d.MaxAttempts, &due, &d.Forced, &d.Body); err != nil {
					rows.Close()
					return fmt.Errorf("load deliveries: %w", err)
				}
				d.Due = time.Unix(0, due)
				out = append(out, d)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("load deliveries: %w", err)
			}
		}
		return nil
	}
	if err := read(fresh, "event_seq > 0"); err != nil {
		return nil, 0, err
	}
	if since >= 0 && since < cursor {
		// "event_seq > 0" lets SQLite use the partial unique index.
		if err := read(all, "event_seq > 0 AND event_seq > ?", since); err != nil {
			return nil, 0, err
		}
	}
	return out, cursor, nil
}

// DeliveryBody returns a delivery's request body.
func (s *Webhooks) DeliveryBody(ctx context.Context, id string) ([]byte, error) {
	var body []byte
	err := s.db.QueryRowContext(ctx, `SELECT body FROM webhook_deliveries WHERE id = ?`, id).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errdefs.NotFound("delivery %s not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("load delivery body %s: %w", id, err)
	}
	return body, nil
}

// RecordAttempts logs finished attempts and applies their outcomes (see
// store.Webhooks).
func (s *Webhooks) RecordAttempts(ctx context.Context, node, boot string, recs []store.AttemptRecord,
	disabled func(ctx context.Context, tx *sqldb.Tx, i int) error) error {
	if len(recs) == 0 {
		return nil
	}
	if s.db.Dialect() == sqldb.Postgres && !slices.ContainsFunc(recs, func(r store.AttemptRecord) bool {
		return r.Disable != "" || r.Counters != nil
	}) {
		// The common case, all successes of healthy webhooks: one
		// statement, one round trip, no transaction to begin and commit.
		return recordPG(ctx, s.db, node, boot, recs)
	}
	return s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		// The last record of a webhook carries its counters.
		counters := map[string]int{}
		for i := range recs {
			r := &recs[i]
			if r.Counters != nil {
				counters[r.WebhookID] = i
			}
			if r.Disable == "" {
				continue
			}
			// Only while node's boot holds the queue (a server that lost it
			// must not turn off a webhook the new holder delivers to), and
			// only once: an already disabled webhook gets no second event.
			res, err := tx.ExecContext(ctx, `UPDATE webhooks SET enabled = 0, disabled_reason = ?, updated_at = ?
				WHERE id = ? AND enabled = 1 AND `+leaseHeld, r.Disable, r.At.UnixNano(), r.WebhookID, node, boot, r.DeliveryID)
			if err != nil {
				return fmt.Errorf("disable webhook: %w", err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return fmt.Errorf("disable webhook: %w", err)
			} else if n == 0 {
				continue
			}
			if disabled != nil {
				if err := disabled(ctx, tx, i); err != nil {
					return err
				}
			}
		}
		if tx.Dialect() == sqldb.SQLite {
			if err := recordRows(ctx, tx, node, boot, recs); err != nil {
				return err
			}
		} else if err := recordPG(ctx, tx, node, boot, recs); err != nil {
			return err
		}
		for id, i := range counters {
			h := recs[i].Counters
			if _, err := tx.ExecContext(ctx, `UPDATE webhooks SET consecutive_failures = ?, failing_since = ? WHERE id = ? AND `+leaseHeld,
				h.ConsecutiveFailures, nanos(h.FailingSince), id, node, boot, recs[i].DeliveryID); err != nil {
				return fmt.Errorf("update webhook counters: %w", err)
			}
		}
		return nil
	})
}

// leaseHeld, in an UPDATE of webhooks, holds while node's boot (the next
// two arguments) holds the webhook's queue, or when the record is of a
// test ping (the third: its delivery id), which belongs to no queue.
const leaseHeld = `(lease_node = ? AND lease_boot = ? OR EXISTS
	(SELECT 1 FROM webhook_deliveries d WHERE d.id = ? AND d.event_seq = 0))`

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func attemptStatus(r *store.AttemptRecord) string {
	if r.OK {
		return store.DeliverySuccess
	}
	return store.DeliveryFailed
}

// recordPG records attempts and outcomes on PostgreSQL in one statement:
// the values go as arrays, so its text is the same for every batch size
// (prepared once). An outcome counts only while node's process boot still
// holds the webhook's queue (test pings belong to no queue): a server that
// lost its lease must not overwrite what the new holder records. Attempts
// are not logged for deliveries that are gone (a deleted webhook).
func recordPG(ctx context.Context, x execer, node, boot string, recs []store.AttemptRecord) error {
	n := len(recs)
	ids, dids, hids, statuses, urls, hdrs, states := make([]string, n), make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	attempt, respStatus := make([]int32, n), make([]*int32, n)
	dur := make([]float64, n)
	class, msg := make([]*string, n), make([]*string, n)
	ts, next := make([]int64, n), make([]int64, n)
	for i := range recs {
		r := &recs[i]
		ids[i], dids[i], hids[i], urls[i], hdrs[i], states[i] = r.ID, r.DeliveryID, r.WebhookID, r.URL, r.RequestHeaders, r.State
		statuses[i] = attemptStatus(r)
		attempt[i], dur[i], ts[i], next[i] = int32(r.Attempt), r.DurationMs, r.At.UnixNano(), nanos(r.NextAttemptAt)
		if r.ResponseStatus != 0 {
			v := int32(r.ResponseStatus)
			respStatus[i] = &v
		}
		if r.ErrorClass != "" {
			class[i], msg[i] = &r.ErrorClass, &r.ErrorMessage
		}
	}
	_, err := x.ExecContext(ctx, `WITH v AS (
		SELECT * FROM unnest(?::text[], ?::text[], ?::text[], ?::int[], ?::text[], ?::float8[], ?::text[], ?::text[],
			?::int[], ?::text[], ?::text[], ?::bigint[], ?::text[], ?::bigint[])
		AS v(id, delivery_id, webhook_id, attempt, status, duration_ms, request_url, request_headers,
			response_status, error_class, error_message, ts, state, next_at)
	), ins AS (
		INSERT INTO webhook_attempts (id, delivery_id, webhook_id, attempt, status, duration_ms, request_url, request_headers,
			response_status, error_class, error_message, ts)
		SELECT id, delivery_id, webhook_id, attempt, status, duration_ms, request_url, request_headers,
			response_status, error_class, error_message, ts
		FROM v WHERE EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.id = v.delivery_id)
		ON CONFLICT DO NOTHING
	)
	UPDATE webhook_deliveries d SET state = v.state, attempts = v.attempt, next_attempt_at = v.next_at, updated_at = v.ts, forced = 0
	FROM v WHERE d.id = v.delivery_id AND d.state = 'pending' AND (d.event_seq = 0 OR EXISTS
		(SELECT 1 FROM webhooks w WHERE w.id = d.webhook_id AND w.lease_node = ? AND w.lease_boot = ?))`,
		ids, dids, hids, attempt, statuses, dur, urls, hdrs, respStatus, class, msg, ts, states, next, node, boot)
	if err != nil {
		return fmt.Errorf("record attempts: %w", err)
	}
	return nil
}

// recordRows records attempts and outcomes one row at a time (SQLite): an
// in-process database has no round trips to save, and its planner scans
// the table for an UPDATE ... FROM (VALUES ...), so per-row prepared
// statements are faster there.
func recordRows(ctx context.Context, tx *sqldb.Tx, node, boot string, recs []store.AttemptRecord) error {
	att, err := tx.PrepareContext(ctx, `INSERT INTO webhook_attempts
		(id, delivery_id, webhook_id, attempt, status, duration_ms, request_url, request_headers,
		 response_status, error_class, error_message, ts)
		SELECT ?,?,?,?,?,?,?,?,?,?,?,? WHERE EXISTS (SELECT 1 FROM webhook_deliveries WHERE id = ?2)
		ON CONFLICT DO NOTHING`)
	if err != nil {
		return err
	}
	defer att.Close()
	for i := range recs {
		r := &recs[i]
		if _, err := att.ExecContext(ctx, r.ID, r.DeliveryID, r.WebhookID, r.Attempt, attemptStatus(r), r.DurationMs, r.URL,
			r.RequestHeaders, nullInt(r.ResponseStatus), nullStr(r.ErrorClass), nullStr(r.ErrorMessage), r.At.UnixNano()); err != nil {
			return fmt.Errorf("insert attempt: %w", err)
		}
	}
	upd, err := tx.PrepareContext(ctx, `UPDATE webhook_deliveries SET state = ?2, attempts = ?3, next_attempt_at = ?4, updated_at = ?5, forced = 0
		WHERE id = ?1 AND state = 'pending' AND (event_seq = 0 OR EXISTS
			(SELECT 1 FROM webhooks w WHERE w.id = webhook_deliveries.webhook_id AND w.lease_node = ?6 AND w.lease_boot = ?7))`)
	if err != nil {
		return err
	}
	defer upd.Close()
	for i := range recs {
		r := &recs[i]
		if _, err := upd.ExecContext(ctx, r.DeliveryID, r.State, r.Attempt, nanos(r.NextAttemptAt), r.At.UnixNano(), node, boot); err != nil {
			return fmt.Errorf("update delivery: %w", err)
		}
	}
	return nil
}

func nullInt(n int) any {
	if n == 0 {
		return nil
	}
	return n
}

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// Redeliver makes a delivery pending for one more attempt (see store.Webhooks).
func (s *Webhooks) Redeliver(ctx context.Context, webhookID, id string, now time.Time) (store.PendingDelivery, error) {
	var d store.PendingDelivery
	err := s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT id, webhook_id, event_seq, attempts FROM webhook_deliveries WHERE webhook_id = ? AND
			(id = ? OR id = (SELECT delivery_id FROM webhook_attempts WHERE id = ?))`, webhookID, id, id).
			Scan(&d.ID, &d.WebhookID, &d.EventSeq, &d.Attempts)
		if errors.Is(err, sql.ErrNoRows) {
			return errdefs.NotFound("delivery %s not found for webhook %s", id, webhookID)
		}
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE webhook_deliveries SET state = 'pending',
			max_attempts = CASE WHEN max_attempts > attempts THEN max_attempts ELSE attempts + 1 END,
			next_attempt_at = ?, updated_at = ?, forced = CASE WHEN event_seq > 0 THEN 1 ELSE 0 END WHERE id = ?`,
			now.UnixNano(), now.UnixNano(), d.ID)
		return err
	})
	if err != nil {
		return d, fmt.Errorf("redeliver %s: %w", id, err)
	}
	d.MaxAttempts, d.Due, d.Forced = d.Attempts+1, now, true
	return d, nil
}

// SweepDeliveries deletes finished deliveries last updated before cutoff,
// with their attempts.
func (s *Webhooks) SweepDeliveries(ctx context.Context, cutoff time.Time) (int64, error) {
	var n int64
	err := s.db.InTx(ctx, func(tx *sqldb.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM webhook_attempts WHERE delivery_id IN
			(SELECT id FROM webhook_deliveries WHERE state != 'pending' AND updated_at < ?)`, cutoff.UnixNano()); err != nil {
			return fmt.Errorf("attempts: %w", err)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE state != 'pending' AND updated_at < ?`, cutoff.UnixNano())
		if err != nil {
			return fmt.Errorf("deliveries: %w", err)
		}
		n, _ = res.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sweep webhook deliveries: %w", err)
	}
	return n, nil
}
