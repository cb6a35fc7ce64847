package webhook

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/store"
	sig "github.com/sbxdev/sbx/sdk/webhook"
)

// Limits on registrations.
const (
	MaxNameLen   = 128
	MaxURLLen    = 2048
	MaxSecretLen = 1024
	MaxPerTeam   = 100 // webhooks per team
)

// SecretRotationGrace is how long the previous secret keeps signing
// webhook-signature after a change.
const SecretRotationGrace = 24 * time.Hour

func errNotFound(id string) error {
	return errdefs.NotFound("webhook %s not found", id)
}

// Input is a create request or, with nil fields left unchanged, an update.
type Input struct {
	Name            *string   `json:"name,omitempty"`
	URL             *string   `json:"url,omitempty"`
	Events          *[]string `json:"events,omitempty"`
	Enabled         *bool     `json:"enabled,omitempty"`
	SignatureSecret *string   `json:"signatureSecret,omitempty"`
}

func (e *Engine) validate(in *Input, create bool) error {
	if create {
		var missing []string
		if in.Name == nil {
			missing = append(missing, "name")
		}
		if in.URL == nil {
			missing = append(missing, "url")
		}
		if in.Events == nil {
			missing = append(missing, "events")
		}
		if in.SignatureSecret == nil {
			missing = append(missing, "signatureSecret")
		}
		if len(missing) > 0 {
			return errdefs.Invalid("missing required field(s): %s", strings.Join(missing, ", "))
		}
	}
	if in.Name != nil {
		n := strings.TrimSpace(*in.Name)
		if n == "" {
			return errdefs.Invalid("name must not be empty")
		}
		if utf8.RuneCountInString(n) > MaxNameLen {
			return errdefs.Invalid("name is %d characters long; the limit is %d", utf8.RuneCountInString(n), MaxNameLen)
		}
		*in.Name = n
	}
	if in.URL != nil {
		if err := e.validateURL(*in.URL); err != nil {
			return err
		}
	}
	if in.Events != nil {
		if len(*in.Events) == 0 {
			return errdefs.Invalid("events must list at least one event type; known types: %s", strings.Join(events.Types, ", "))
		}
		seen := map[string]bool{}
		var out []string
		for _, t := range *in.Events {
			if !events.KnownType(t) {
				return errdefs.Invalid("unknown event type %q; known types: %s", t, strings.Join(events.Types, ", "))
			}
			if !seen[t] {
				seen[t] = true
				out = append(out, t)
			}
		}
		*in.Events = out
	}
	if in.SignatureSecret != nil {
		s := *in.SignatureSecret
		switch {
		case strings.TrimSpace(s) == "":
			return errdefs.Invalid("signatureSecret must not be empty; use a long random string, e.g. the output of `openssl rand -base64 32`")
		case len(s) > MaxSecretLen:
			return errdefs.Invalid("signatureSecret is %d bytes; the limit is %d", len(s), MaxSecretLen)
		}
		if _, err := sig.StandardKey(s); err != nil {
			return errdefs.Invalid("signatureSecret starts with whsec_ but the rest is not standard base64; drop the prefix or encode the key")
		}
	}
	return nil
}

func (e *Engine) validateURL(raw string) error {
	if len(raw) > MaxURLLen {
		return errdefs.Invalid("url is %d bytes; the limit is %d", len(raw), MaxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return errdefs.Invalid("url %q is not valid: want an absolute http:// or https:// URL such as https://example.com/webhooks/e2b", raw)
	}
	if u.User != nil {
		return errdefs.Invalid("url must not contain credentials; authenticate deliveries with the signature instead")
	}
	if u.Fragment != "" {
		return errdefs.Invalid("url must not contain a #fragment")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return errdefs.Invalid("url port %q is not a port number (1-65535)", p)
		}
	}
	// Literal addresses can be judged now, for a clear error at
	// registration; host names are checked on every connection.
	if a, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil {
		if err := e.cfg.checkAddr(a); err != nil {
			return errdefs.Invalid("url: %s", err.Error())
		}
	}
	return nil
}

// Create registers a webhook for team.
func (e *Engine) Create(ctx context.Context, teamID string, in Input) (*Webhook, error) {
	if err := e.validate(&in, true); err != nil {
		return nil, err
	}
	now := e.cfg.Now().UTC()
	w := &Webhook{
		ID: uuid.NewString(), TeamID: teamID, Name: *in.Name, URL: *in.URL, Secret: Secret(*in.SignatureSecret),
		Events: *in.Events, Enabled: in.Enabled == nil || *in.Enabled, CreatedAt: now, UpdatedAt: now,
	}
	// Holding the fan-out cursor (every server's fan-out takes it) while
	// StartSeq is read and the webhook is written means every event after
	// StartSeq is fanned out to it, none before.
	e.fanMu.Lock()
	defer e.fanMu.Unlock()
	if err := e.repo.CreateWebhook(ctx, w, MaxPerTeam, e.events.LastSeq); err != nil {
		return nil, err
	}
	e.mu.Lock()
	c := *w
	e.hooks[w.ID] = &c
	e.mu.Unlock()
	e.announce(ctx)
	e.log.Info("webhook created", "webhook.id", w.ID, "team.id", teamID, "url", w.URL)
	return w, nil
}

// List returns the team's webhooks, oldest first.
func (e *Engine) List(ctx context.Context, teamID string) ([]*Webhook, error) {
	hooks, err := e.repo.ListWebhooks(ctx, teamID)
	if err != nil {
		return nil, err
	}
	out := make([]*Webhook, len(hooks))
	for i := range hooks {
		out[i] = &hooks[i]
	}
	return out, nil
}

// Get returns one of the team's webhooks.
func (e *Engine) Get(ctx context.Context, teamID, id string) (*Webhook, error) {
	w, err := e.repo.Webhook(ctx, teamID, id)
	if err != nil {
		return nil, err
	}
	return &w, nil
}

// Update replaces the fields set in in. Enabling a webhook clears its
// failure streak and resumes its parked deliveries.
func (e *Engine) Update(ctx context.Context, teamID, id string, in Input) (*Webhook, error) {
	if err := e.validate(&in, false); err != nil {
		return nil, err
	}
	e.fanMu.Lock()
	defer e.fanMu.Unlock()
	// Under the fan-out cursor: a fan-out sees the old or the new
	// subscription, not half of each.
	var wasEnabled bool
	updated, err := e.repo.UpdateWebhook(ctx, teamID, id, func(w *Webhook) error {
		wasEnabled = w.Enabled
		if in.Name != nil {
			w.Name = *in.Name
		}
		if in.URL != nil {
			w.URL = *in.URL
		}
		if in.Events != nil {
			w.Events = *in.Events
		}
		if in.SignatureSecret != nil && Secret(*in.SignatureSecret) != w.Secret {
			w.PrevSecret, w.PrevSecretUntil = w.Secret, e.cfg.Now().Add(SecretRotationGrace).UTC()
			w.Secret = Secret(*in.SignatureSecret)
		}
		if in.Enabled != nil {
			w.Enabled = *in.Enabled
		}
		if w.Enabled && !wasEnabled {
			w.DisabledReason, w.ConsecutiveFailures, w.FailingSince = "", 0, time.Time{}
		}
		if !w.Enabled && in.Enabled != nil && !*in.Enabled {
			w.DisabledReason = "disabled by request"
		}
		w.UpdatedAt = e.cfg.Now().UTC()
		return nil
	})
	if err != nil {
		return nil, err
	}
	w := &updated
	e.mu.Lock()
	c := *w
	e.hooks[w.ID] = e.merged(&c)
	e.mu.Unlock()
	e.announce(ctx)
	if w.Enabled && !wasEnabled {
		e.wakeClaim(true) // its parked deliveries go out again, from whichever server claims them
	}
	e.signal()
	return w, nil
}

// Delete removes a webhook with its deliveries and attempt log.
func (e *Engine) Delete(ctx context.Context, teamID, id string) error {
	e.fanMu.Lock()
	defer e.fanMu.Unlock()
	err := e.repo.DeleteWebhook(ctx, teamID, id, func() {
		e.mu.Lock()
		delete(e.hooks, id)
		e.mu.Unlock()
	})
	if err != nil {
		return err
	}
	e.announce(ctx)
	e.signal()
	return nil
}

// Attempt is one delivery attempt in the API (§1.7 WebhookDelivery).
type Attempt struct {
	ID             string          `json:"id"`
	DeliveryID     string          `json:"deliveryId"`
	Attempt        int             `json:"attempt"`
	TeamID         string          `json:"teamId"`
	WebhookID      string          `json:"webhookId"`
	EventID        string          `json:"eventId"`
	SandboxID      string          `json:"sandboxId"`
	EventType      string          `json:"eventType"`
	Status         string          `json:"status"`
	DurationMs     float64         `json:"durationMs"`
	RequestBody    string          `json:"requestBody"`
	RequestHeaders json.RawMessage `json:"requestHeaders"`
	RequestURL     string          `json:"requestUrl"`
	// ResponseBody and ResponseHeaders are always null: what a receiver
	// answers is not kept (see attempt in send.go). The fields stay for
	// clients of E2B's shape.
	ResponseBody           *string         `json:"responseBody"`
	ResponseHeaders        json.RawMessage `json:"responseHeaders"`
	ResponseHTTPStatusCode *int            `json:"responseHttpStatusCode"`
	ErrorClass             *string         `json:"errorClass"`
	ErrorMessage           *string         `json:"errorMessage"`
	Timestamp              time.Time       `json:"timestamp"`
}

func (r *result) toAttempt(h *Webhook) *Attempt {
	a := &Attempt{
		ID: r.id, DeliveryID: r.deliveryID, Attempt: r.attempt, TeamID: h.TeamID, WebhookID: r.webhookID,
		Status: stateFailed, DurationMs: r.durationMs, RequestURL: r.url, RequestHeaders: rawOrNull(r.reqHeaders),
		ResponseHeaders: rawOrNull(""), Timestamp: r.at.UTC(),
	}
	if r.ok {
		a.Status = stateSuccess
	}
	if r.respStatus != 0 {
		a.ResponseHTTPStatusCode = &r.respStatus
	}
	if r.class != "" {
		a.ErrorClass, a.ErrorMessage = &r.class, &r.message
	}
	return a
}

func rawOrNull(s string) json.RawMessage {
	if s == "" {
		return json.RawMessage("null")
	}
	return json.RawMessage(s)
}

// Test sends a ping (type "webhook.test") to the webhook, even a disabled
// one, and returns the attempt. Pings are not retried and do not count
// towards auto-disable.
func (e *Engine) Test(ctx context.Context, teamID, id string) (*Attempt, error) {
	h, err := e.repo.Webhook(ctx, teamID, id)
	if err != nil {
		return nil, err
	}
	now := e.cfg.Now().UTC()
	evID := uuid.NewString()
	body, _ := json.Marshal(events.JSON{
		ID: evID, Version: events.CurrentVersion, Type: "webhook.test",
		EventData:     map[string]any{"message": "Test delivery from sbx. Reply 2xx to acknowledge.", "webhook_id": h.ID},
		SandboxTeamID: teamID, Timestamp: now.Format(time.RFC3339Nano),
	})
	it := &item{id: uuid.NewString(), webhookID: id, maxAttempts: 1, due: now, body: body, force: true}
	if err := e.repo.InsertTestDelivery(ctx, store.NewDelivery{ID: it.id, WebhookID: id, TeamID: teamID, EventID: evID,
		EventType: "webhook.test", Body: body, MaxAttempts: 1, Due: now}); err != nil {
		return nil, fmt.Errorf("test webhook %s: %w", id, err)
	}
	ch := make(chan *Attempt, 1)
	e.mu.Lock()
	e.waiters[it.id] = ch
	e.mu.Unlock()
	e.enqueue([]*item{it})
	wait := time.NewTimer(e.cfg.Timeout + 5*time.Second)
	defer wait.Stop()
	defer func() {
		// The caller gave up: the ping may still go, but nobody waits.
		e.mu.Lock()
		delete(e.waiters, it.id)
		e.mu.Unlock()
	}()
	select {
	case a := <-ch:
		a.EventID, a.EventType, a.RequestBody = evID, "webhook.test", string(body)
		return a, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-wait.C:
		return nil, errdefs.Unavailable("the test delivery %s is still queued behind earlier deliveries; check `sbx webhook deliveries %s`", it.id, id)
	}
}

// Redeliver makes one more attempt of a delivery, named by its id (the
// webhook-id header) or by one of its attempts' ids (e2b-delivery-id).
func (e *Engine) Redeliver(ctx context.Context, teamID, webhookID, id string) (string, error) {
	if _, err := e.repo.Webhook(ctx, teamID, webhookID); err != nil {
		return "", err
	}
	// An outcome of this delivery finished here may still await its
	// record; landing after the redelivery it would mark the row finished
	// again and drop the redelivery's own outcome.
	e.waitRecorded()
	now := e.cfg.Now()
	d, err := e.repo.Redeliver(ctx, webhookID, id, now)
	if err != nil {
		return "", err
	}
	did, seq, attempts := d.ID, d.EventSeq, d.Attempts
	e.mu.Lock()
	if it := e.known[did]; it != nil {
		if it.where == inWaiting {
			it.due = now
			heapFix(&e.waiting, it.index)
		}
		e.mu.Unlock()
		e.signal()
		return did, nil
	}
	_, held := e.owned[webhookID]
	delete(e.done, did) // sent before, and asked for again
	e.mu.Unlock()
	if seq > 0 && !held {
		// Another server may hold the webhook's queue: whoever holds it (or
		// claims it, this one included) sends the redelivery in order.
		e.announce(ctx)
		e.wakeClaim(true)
		return did, nil
	}
	e.enqueue([]*item{{id: did, webhookID: webhookID, seq: seq, attempts: attempts, maxAttempts: attempts + 1, due: now, force: true}})
	return did, nil
}

func encodeCursor(rid int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(rid, 10)))
}

func decodeCursor(s string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		var n int64
		if n, err = strconv.ParseInt(string(b), 10, 64); err == nil && n > 0 {
			return n, nil
		}
	}
	return 0, errdefs.Invalid("cursor %q is not valid; pass the nextCursor of the previous page", s)
}

// announce tells the other servers sharing the database that webhooks
// changed, so the one sending deliveries uses the change at once.
func (e *Engine) announce(ctx context.Context) {
	if err := e.bus.Notify(context.WithoutCancel(ctx), HooksChannel); err != nil {
		e.log.Warn("announce webhook change to other servers", "err", err)
	}
}
