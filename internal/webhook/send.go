package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/netguard"
	"github.com/sbxdev/sbx/internal/store"

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
	sandbox    string // set when the delivery goes in its sandbox's order (order.go)
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
		var err error
		if body, err = e.repo.DeliveryBody(ctx, it.id); err != nil {
			if ctx.Err() != nil || errors.Is(err, errdefs.ErrNotFound) {
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
	if it.seq > 0 {
		req.Header.Set(sig.HeaderEventSeq, strconv.FormatInt(it.seq, 10))
	}
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
// batch), in the order they completed, until Run ends and none is left.
func (e *Engine) writeResults() {
	const most = 512
	for {
		e.mu.Lock()
		n := min(len(e.resultQ), most)
		batch := append([]*result(nil), e.resultQ[:n]...)
		e.resultQ = append(e.resultQ[:0], e.resultQ[n:]...)
		closed := e.resultsClosed
		e.mu.Unlock()
		if len(batch) == 0 {
			if closed {
				return
			}
			<-e.resultWake
			continue
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
		// most RecordLag behind): were this server killed, the next holder
		// of its queue would send again only those few, not every attempt
		// still waiting to be recorded.
		e.mu.Lock()
		e.written += uint64(len(batch))
		e.flushed.Broadcast()
		for _, r := range batch {
			if ln := e.lanes[r.webhookID]; ln != nil && ln.unrecorded > 0 {
				ln.unrecorded--
				if r.disabled && ln.disabling > 0 {
					ln.disabling--
				}
			}
			if r.sandbox != "" && r.state != statePending {
				e.advance(r.webhookID, r.sandbox, r.deliveryID)
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

// waitRecorded returns once every attempt finished so far is recorded (or
// given up on after retries: a bounded wait).
func (e *Engine) waitRecorded() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for target := e.queued; e.written < target && e.running; {
		e.flushed.Wait()
	}
}

func (e *Engine) wakeWriter() {
	select {
	case e.resultWake <- struct{}{}:
	default:
	}
}

func (e *Engine) writeBatch(batch []*result) error {
	ctx := context.Background() // results must be recorded even while shutting down
	recs := make([]store.AttemptRecord, len(batch))
	for i, r := range batch {
		recs[i] = store.AttemptRecord{
			ID: r.id, DeliveryID: r.deliveryID, WebhookID: r.webhookID, Attempt: r.attempt, OK: r.ok,
			DurationMs: r.durationMs, URL: r.url, RequestHeaders: r.reqHeaders, ResponseStatus: r.respStatus,
			ErrorClass: r.class, ErrorMessage: r.message, At: r.at, State: r.state, NextAttemptAt: r.nextAttemptAt,
		}
		if r.hookKnown && !r.force && r.countersChanged {
			recs[i].Counters = &r.hook
		}
		if r.disabled {
			recs[i].Disable = r.disabledReason
		}
	}
	var appended bool
	err := e.repo.RecordAttempts(ctx, e.cfg.Node, e.boot, recs, func(ctx context.Context, tx *sqldb.Tx, i int) error {
		r := batch[i]
		ev := &events.Event{Type: events.WebhookDisabled, TeamID: r.hook.TeamID, EventData: map[string]any{
			"webhook_id": r.webhookID, "webhook_name": r.hook.Name, "url": r.hook.URL, "reason": r.disabledReason,
		}}
		appended = true
		return e.events.AppendTx(ctx, tx, ev)
	})
	if err != nil {
		return err
	}
	if appended {
		e.events.Notify()
	}
	return nil
}
