package webhook

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/netguard"

	"github.com/google/uuid"

	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	sig "github.com/sbxdev/sbx/sdk/webhook"
)

// userAgent identifies sbx deliveries to receivers.
const userAgent = "sbx-webhooks/1"

// result is one finished attempt, applied in memory by complete and then
// written to the database by writeResults.
type result struct {
	id         string // the attempt, sent as e2b-delivery-id
	deliveryID string
	webhookID  string
	attempt    int
	ok         bool
	durationMs float64
	url        string
	reqHeaders string
	respStatus int
	class      string
	message    string
	at         time.Time
	force      bool

	state           string
	nextAttemptAt   time.Time
	hook            Webhook // failure counters after this attempt
	hookKnown       bool
	countersChanged bool // hook's failure counters differ from the stored ones
	disabled        bool
	disabledReason  string
	waiter          chan *Attempt // a Test call waiting for this attempt
}

// attempt sends one delivery and classifies the outcome.
func (e *Engine) attempt(ctx context.Context, h *Webhook, it *item) *result {
	r := &result{id: uuid.NewString(), url: h.URL, at: e.cfg.Now()}
	body := it.body
	if body == nil {
		if err := e.db.QueryRowContext(ctx, `SELECT body FROM webhook_deliveries WHERE id = ?`, it.id).Scan(&body); err != nil {
			if ctx.Err() != nil || errors.Is(err, sql.ErrNoRows) {
				r.class = classCanceled // shutting down, or the webhook was deleted
				return r
			}
			r.class, r.message = classRequest, "load delivery body: "+err.Error()
			return r
		}
	}
	std, err := sig.SignStandard(string(h.Secret), it.id, r.at, body)
	if err != nil {
		r.class, r.message = "signature_error", err.Error()
		return r
	}
	if h.PrevSecret != "" && r.at.Before(h.PrevSecretUntil) {
		// During a rotation receivers may still hold the old secret; E2B's
		// scheme has room for one signature only, so it uses the new one.
		if old, err := sig.SignStandard(string(h.PrevSecret), it.id, r.at, body); err == nil {
			std += " " + old
		}
	}
	actx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		r.class, r.message = classRequest, err.Error()
		return r
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set(sig.HeaderE2BWebhookID, h.ID)
	req.Header.Set(sig.HeaderE2BDeliveryID, r.id)
	req.Header.Set(sig.HeaderE2BSignatureVersion, "v1")
	req.Header.Set(sig.HeaderE2BSignature, sig.SignE2B(string(h.Secret), body))
	req.Header.Set(sig.HeaderID, it.id)
	req.Header.Set(sig.HeaderTimestamp, strconv.FormatInt(r.at.Unix(), 10))
	req.Header.Set(sig.HeaderSignature, std)
	r.reqHeaders = headersJSON(req.Header, true)

	start := time.Now()
	resp, err := e.client.Do(req)
	if err != nil {
		r.durationMs = ms(time.Since(start))
		r.class, r.message = classify(ctx, err)
		return r
	}
	// The receiver's answer is not kept: a webhook URL is a tenant's
	// choice, and whatever answers there (an internal service the operator
	// allowed, say) must not be read back through the delivery log. Its
	// status code is all that counts. Drain a little so the connection can
	// be reused; past that, close it.
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
	r.durationMs = ms(time.Since(start))
	r.respStatus = resp.StatusCode
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		r.ok = true
		return r
	}
	r.class, r.message = classHTTP, fmt.Sprintf("the endpoint answered %s; only 2xx counts as delivered", resp.Status)
	return r
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func classify(ctx context.Context, err error) (class, msg string) {
	var de *netguard.DestinationError
	var dns *net.DNSError
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		return classCanceled, "sbx is shutting down"
	case errors.As(err, &de):
		return classRequest, de.Error()
	case errors.As(err, &dns):
		return classDNS, dns.Error()
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return classTimeout, "no complete answer within the delivery timeout: " + err.Error()
	default:
		return classTransport, err.Error()
	}
}

// headersJSON encodes the request's headers for the attempt log, hiding
// signatures.
func headersJSON(h http.Header, redact bool) string {
	m := make(map[string]string, len(h))
	for k, v := range h {
		lk := strings.ToLower(k)
		val := strings.Join(v, ", ")
		if redact && (lk == sig.HeaderE2BSignature || lk == sig.HeaderSignature) {
			val = "[redacted]"
		}
		m[lk] = val
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// writeResults records finished attempts in batches (one transaction per
// batch), until the results channel is closed.
func (e *Engine) writeResults() {
	batch := make([]*result, 0, 512)
	for r := range e.results {
		batch = append(batch[:0], r)
	more:
		for len(batch) < cap(batch) {
			select {
			case r, ok := <-e.results:
				if !ok {
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		// Retry a failed batch: losing the log of a delivered attempt would
		// resend it after a restart, which is allowed but avoidable.
		for try := 0; ; try++ {
			err := e.writeBatch(batch)
			if err == nil {
				break
			}
			e.log.Error("record webhook attempts failed", "err", err, "attempts", len(batch), "try", try)
			if try == 4 {
				break
			}
			time.Sleep(time.Duration(try+1) * 200 * time.Millisecond)
		}
		// A webhook's attempts wait for the records of earlier ones (at
		// most recordLag behind): were this server killed, the next holder
		// of its queue would send again only those few, not every attempt
		// still waiting to be recorded.
		e.mu.Lock()
		for _, r := range batch {
			if ln := e.lanes[r.webhookID]; ln != nil && ln.unrecorded > 0 {
				ln.unrecorded--
			}
		}
		e.mu.Unlock()
		e.signal()
		for _, r := range batch {
			if r.waiter != nil {
				r.waiter <- r.toAttempt(&r.hook)
			}
		}
	}
}

func (e *Engine) writeBatch(batch []*result) error {
	ctx := context.Background() // results must be recorded even while shutting down
	if e.db.Dialect() == sqldb.Postgres && !slices.ContainsFunc(batch, func(r *result) bool { return r.disabled || r.countersChanged && !r.force }) {
		// The common case, all successes of healthy webhooks: one
		// statement, one round trip, the same text (so prepared once)
		// whatever the batch size.
		return e.recordPG(ctx, e.db, batch)
	}
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	attempts := make([][]any, 0, len(batch))
	updates := make([][]any, 0, len(batch))
	hooks := map[string]*result{} // last result per webhook carries its counters
	var appended bool
	for _, r := range batch {
		status := stateSuccess
		if !r.ok {
			status = stateFailed
		}
		attempts = append(attempts, []any{r.id, r.deliveryID, r.webhookID, r.attempt, status, r.durationMs, r.url, r.reqHeaders,
			nullInt(r.respStatus), nullStr(r.class), nullStr(r.message), r.at.UnixNano()})
		var next int64
		if !r.nextAttemptAt.IsZero() {
			next = r.nextAttemptAt.UnixNano()
		}
		updates = append(updates, []any{r.deliveryID, r.state, r.attempt, next, r.at.UnixNano()})
		if r.hookKnown && !r.force && r.countersChanged {
			hooks[r.webhookID] = r
		}
		if r.disabled {
			if _, err := tx.ExecContext(ctx, `UPDATE webhooks SET enabled = 0, disabled_reason = ?, updated_at = ? WHERE id = ?`,
				r.disabledReason, r.at.UnixNano(), r.webhookID); err != nil {
				return fmt.Errorf("disable webhook: %w", err)
			}
			ev := &events.Event{Type: events.WebhookDisabled, TeamID: r.hook.TeamID, EventData: map[string]any{
				"webhook_id": r.webhookID, "webhook_name": r.hook.Name, "url": r.hook.URL, "reason": r.disabledReason,
			}}
			if err := e.events.AppendTx(ctx, tx, ev); err != nil {
				return err
			}
			appended = true
		}
	}
	if tx.Dialect() == sqldb.SQLite {
		// In-process SQLite has no round trips to save, and its planner
		// scans the table for an UPDATE ... FROM (VALUES ...): per-row
		// prepared statements are faster there.
		if err := e.writeRows(ctx, tx, attempts, updates); err != nil {
			return err
		}
	} else if err := e.recordPG(ctx, tx, batch); err != nil {
		return err
	}
	for id, r := range hooks {
		var since int64
		if !r.hook.FailingSince.IsZero() {
			since = r.hook.FailingSince.UnixNano()
		}
		if _, err := tx.ExecContext(ctx, `UPDATE webhooks SET consecutive_failures = ?, failing_since = ? WHERE id = ?`,
			r.hook.ConsecutiveFailures, since, id); err != nil {
			return fmt.Errorf("update webhook counters: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if appended {
		e.events.Notify()
	}
	return nil
}

// recordPG records a batch's attempts and outcomes on PostgreSQL in one
// statement: the values go as arrays, so its text is the same for every
// batch size. An outcome counts only while this server still holds the
// webhook's queue (test pings belong to no queue): a server that lost its
// lease must not overwrite what the new holder records. Attempts are not
// logged for deliveries that are gone (a deleted webhook).
func (e *Engine) recordPG(ctx context.Context, x execer, batch []*result) error {
	n := len(batch)
	ids, dids, hids, statuses, urls, hdrs, states := make([]string, n), make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	attempt, respStatus := make([]int32, n), make([]*int32, n)
	dur := make([]float64, n)
	class, msg := make([]*string, n), make([]*string, n)
	ts, next := make([]int64, n), make([]int64, n)
	for i, r := range batch {
		ids[i], dids[i], hids[i], urls[i], hdrs[i], states[i] = r.id, r.deliveryID, r.webhookID, r.url, r.reqHeaders, r.state
		statuses[i] = stateFailed
		if r.ok {
			statuses[i] = stateSuccess
		}
		attempt[i], dur[i], ts[i] = int32(r.attempt), r.durationMs, r.at.UnixNano()
		if r.respStatus != 0 {
			v := int32(r.respStatus)
			respStatus[i] = &v
		}
		if r.class != "" {
			class[i], msg[i] = &r.class, &r.message
		}
		if !r.nextAttemptAt.IsZero() {
			next[i] = r.nextAttemptAt.UnixNano()
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
		ids, dids, hids, attempt, statuses, dur, urls, hdrs, respStatus, class, msg, ts, states, next, e.cfg.Node, e.boot)
	if err != nil {
		return fmt.Errorf("record attempts: %w", err)
	}
	return nil
}

// writeRows records attempts and outcomes one row at a time (SQLite).
func (e *Engine) writeRows(ctx context.Context, tx *sqldb.Tx, attempts, updates [][]any) error {
	att, err := tx.PrepareContext(ctx, `INSERT INTO webhook_attempts
		(id, delivery_id, webhook_id, attempt, status, duration_ms, request_url, request_headers,
		 response_status, error_class, error_message, ts)
		SELECT ?,?,?,?,?,?,?,?,?,?,?,? WHERE EXISTS (SELECT 1 FROM webhook_deliveries WHERE id = ?2)
		ON CONFLICT DO NOTHING`)
	if err != nil {
		return err
	}
	defer att.Close()
	for _, a := range attempts {
		if _, err := att.ExecContext(ctx, a...); err != nil {
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
	for _, u := range updates {
		if _, err := upd.ExecContext(ctx, append(u, e.cfg.Node, e.boot)...); err != nil {
			return fmt.Errorf("update delivery: %w", err)
		}
	}
	return nil
}

// col is a column of a multi-row INSERT.
type col struct{ name string }

// insertValues writes a multi-row INSERT of rows into table.
func insertValues(table string, cols []col, rows [][]any, _ sqldb.Dialect) (string, []any) {
	var b strings.Builder
	b.WriteString("INSERT INTO " + table + " (")
	for j, c := range cols {
		if j > 0 {
			b.WriteByte(',')
		}
		b.WriteString(c.name)
	}
	b.WriteString(") VALUES ")
	row := "(" + placeholders(len(cols)) + ")"
	args := make([]any, 0, len(rows)*len(cols))
	for i, r := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(row)
		args = append(args, r...)
	}
	return b.String(), args
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
