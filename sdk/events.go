package sdk

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Event is a sandbox lifecycle event (E2B's SandboxEvent).
type Event struct {
	ID                 string         `json:"id"`
	Version            string         `json:"version"`
	Type               string         `json:"type"` // e.g. sandbox.lifecycle.created
	EventData          map[string]any `json:"eventData"`
	SandboxID          string         `json:"sandboxId"`
	SandboxTemplateID  string         `json:"sandboxTemplateId"`
	SandboxBuildID     string         `json:"sandboxBuildId"`
	SandboxExecutionID string         `json:"sandboxExecutionId"`
	SandboxTeamID      string         `json:"sandboxTeamId"`
	Timestamp          string         `json:"timestamp"` // RFC 3339
}

// EventsOptions filters ListEvents.
type EventsOptions struct {
	// SandboxID limits the list to one sandbox's events.
	SandboxID string
	// Types limits the list to these event types.
	Types []string
	// Limit is the page size (server default when 0); Offset skips events.
	Limit, Offset int
	// Ascending lists oldest first; the default is newest first.
	Ascending bool
}

// ListEvents returns the team's sandbox events.
func (c *Client) ListEvents(ctx context.Context, opts EventsOptions) ([]Event, error) {
	q := url.Values{}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if opts.Offset > 0 {
		q.Set("offset", strconv.Itoa(opts.Offset))
	}
	if opts.Ascending {
		q.Set("orderAsc", "true")
	}
	for _, t := range opts.Types {
		q.Add("types", t)
	}
	path := "/events/sandboxes"
	if opts.SandboxID != "" {
		if err := checkID(opts.SandboxID); err != nil {
			return nil, err
		}
		path += "/" + opts.SandboxID
	}
	var out []Event
	if _, err := c.apiDo(ctx, "GET", path, q, nil, &out); err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return out, nil
}

// Webhook is a registered webhook; its secret is never shown again.
type Webhook struct {
	ID             string    `json:"id"`
	TeamID         string    `json:"teamId"`
	Name           string    `json:"name"`
	CreatedAt      time.Time `json:"createdAt"`
	URL            string    `json:"url"`
	Enabled        bool      `json:"enabled"`
	Events         []string  `json:"events"`
	DisabledReason string    `json:"disabledReason,omitempty"`
}

// WebhookOptions creates a webhook (all of Name, URL and Secret required)
// or, in UpdateWebhook, changes the fields that are set.
type WebhookOptions struct {
	Name    *string
	URL     *string
	Events  []string // nil: all lifecycle events on create, unchanged on update
	Enabled *bool
	// Secret signs deliveries (E2B and Standard Webhooks signatures).
	Secret *string
}

func (o WebhookOptions) body() map[string]any {
	b := map[string]any{}
	if o.Name != nil {
		b["name"] = *o.Name
	}
	if o.URL != nil {
		b["url"] = *o.URL
	}
	if o.Events != nil {
		b["events"] = o.Events
	}
	if o.Enabled != nil {
		b["enabled"] = *o.Enabled
	}
	if o.Secret != nil {
		b["signatureSecret"] = *o.Secret
	}
	return b
}

// CreateWebhook registers a webhook.
func (c *Client) CreateWebhook(ctx context.Context, opts WebhookOptions) (*Webhook, error) {
	var w Webhook
	if _, err := c.apiDo(ctx, "POST", "/events/webhooks", nil, opts.body(), &w); err != nil {
		return nil, fmt.Errorf("create webhook: %w", err)
	}
	return &w, nil
}

// ListWebhooks returns the team's webhooks.
func (c *Client) ListWebhooks(ctx context.Context) ([]Webhook, error) {
	var out []Webhook
	if _, err := c.apiDo(ctx, "GET", "/events/webhooks", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("list webhooks: %w", err)
	}
	return out, nil
}

// GetWebhook returns one webhook.
func (c *Client) GetWebhook(ctx context.Context, id string) (*Webhook, error) {
	var w Webhook
	if _, err := c.apiDo(ctx, "GET", "/events/webhooks/"+url.PathEscape(id), nil, nil, &w); err != nil {
		return nil, fmt.Errorf("get webhook %s: %w", id, err)
	}
	return &w, nil
}

// UpdateWebhook changes the fields of opts that are set.
func (c *Client) UpdateWebhook(ctx context.Context, id string, opts WebhookOptions) (*Webhook, error) {
	var w Webhook
	if _, err := c.apiDo(ctx, "PATCH", "/events/webhooks/"+url.PathEscape(id), nil, opts.body(), &w); err != nil {
		return nil, fmt.Errorf("update webhook %s: %w", id, err)
	}
	return &w, nil
}

// DeleteWebhook removes a webhook and its delivery log.
func (c *Client) DeleteWebhook(ctx context.Context, id string) error {
	if _, err := c.apiDo(ctx, "DELETE", "/events/webhooks/"+url.PathEscape(id), nil, nil, nil); err != nil {
		return fmt.Errorf("delete webhook %s: %w", id, err)
	}
	return nil
}

// WebhookAttempt is one try at delivering an event.
type WebhookAttempt struct {
	ID                     string          `json:"id"`
	DeliveryID             string          `json:"deliveryId"`
	Attempt                int             `json:"attempt"`
	WebhookID              string          `json:"webhookId"`
	EventID                string          `json:"eventId"`
	SandboxID              string          `json:"sandboxId"`
	EventType              string          `json:"eventType"`
	Status                 string          `json:"status"` // success or failed
	DurationMs             float64         `json:"durationMs"`
	RequestURL             string          `json:"requestUrl"`
	RequestBody            string          `json:"requestBody"`
	RequestHeaders         json.RawMessage `json:"requestHeaders"`
	ResponseHTTPStatusCode *int            `json:"responseHttpStatusCode"`
	ErrorClass             *string         `json:"errorClass"`
	ErrorMessage           *string         `json:"errorMessage"`
	Timestamp              time.Time       `json:"timestamp"`
}

// WebhookDelivery is an event's delivery to a webhook with its attempts.
type WebhookDelivery struct {
	DeliveryID    string            `json:"deliveryId"`
	EventID       string            `json:"eventId"`
	EventType     string            `json:"eventType"`
	SandboxID     string            `json:"sandboxId"`
	Status        string            `json:"status"` // pending, success or failed
	NextAttemptAt *time.Time        `json:"nextAttemptAt"`
	Attempts      []*WebhookAttempt `json:"attempts"`
}

// DeliveriesOptions pages and filters WebhookDeliveries.
type DeliveriesOptions struct {
	Limit  int      // page size; server default when 0
	Status []string // only deliveries in these states
	Cursor string   // NextCursor of the previous page
}

// WebhookDeliveries returns a page of a webhook's deliveries, newest first,
// and the cursor of the next page ("" on the last).
func (c *Client) WebhookDeliveries(ctx context.Context, id string, opts DeliveriesOptions) ([]WebhookDelivery, string, error) {
	q := url.Values{}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if len(opts.Status) > 0 {
		q.Set("deliveryStatus", strings.Join(opts.Status, ","))
	}
	if opts.Cursor != "" {
		q.Set("cursor", opts.Cursor)
	}
	var page struct {
		Data       []WebhookDelivery `json:"data"`
		NextCursor *string           `json:"nextCursor"`
	}
	if _, err := c.apiDo(ctx, "GET", "/events/webhooks/"+url.PathEscape(id)+"/deliveries", q, nil, &page); err != nil {
		return nil, "", fmt.Errorf("webhook %s deliveries: %w", id, err)
	}
	next := ""
	if page.NextCursor != nil {
		next = *page.NextCursor
	}
	return page.Data, next, nil
}

// TestWebhook sends a signed webhook.test event at once and returns the
// attempt (its Status says whether the receiver accepted it).
func (c *Client) TestWebhook(ctx context.Context, id string) (*WebhookAttempt, error) {
	var a WebhookAttempt
	if _, err := c.apiDo(ctx, "POST", "/events/webhooks/"+url.PathEscape(id)+"/test", nil, nil, &a); err != nil {
		return nil, fmt.Errorf("test webhook %s: %w", id, err)
	}
	return &a, nil
}

// RedeliverWebhook queues a delivery once more and returns the new
// delivery's ID.
func (c *Client) RedeliverWebhook(ctx context.Context, id, deliveryID string) (string, error) {
	var out struct {
		DeliveryID string `json:"deliveryId"`
	}
	path := "/events/webhooks/" + url.PathEscape(id) + "/deliveries/" + url.PathEscape(deliveryID) + "/redeliver"
	if _, err := c.apiDo(ctx, "POST", path, nil, nil, &out); err != nil {
		return "", fmt.Errorf("redeliver %s of webhook %s: %w", deliveryID, id, err)
	}
	return out.DeliveryID, nil
}

// StreamEventsOptions filters StreamEvents.
type StreamEventsOptions struct {
	Types     []string
	SandboxID string
	// After replays the events after this stream ID (an ID StreamEvents
	// passed to onEvent; "0" = from the start) before following live
	// ones; empty means only new events.
	After string
}

// StreamEvents follows the team's events live (sbx's server-sent events
// stream) and calls onEvent with each event and its stream ID, until ctx
// ends or the stream breaks; then it returns why. To resume without gaps,
// call it again with After set to the last ID seen.
func (c *Client) StreamEvents(ctx context.Context, opts StreamEventsOptions, onEvent func(ev Event, id string)) error {
	if c.apiURL == nil {
		return errNoControlPlane
	}
	q := url.Values{}
	for _, t := range opts.Types {
		q.Add("types", t)
	}
	if opts.SandboxID != "" {
		q.Set("sandboxId", opts.SandboxID)
	}
	if opts.After != "" {
		q.Set("lastEventId", opts.After)
	}
	u := *c.apiURL
	u.Path = strings.TrimRight(u.Path, "/") + "/events/stream"
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("stream events: %w", err)
	}
	req.Header.Set("X-API-Key", c.apiKey)
	if c.teamID != "" {
		req.Header.Set("X-Team-ID", c.teamID)
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("stream events: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("stream events: %w", apiErrorFrom(resp))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), c.maxMessage)
	var id, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data != "" {
				var ev Event
				if err := json.Unmarshal([]byte(data), &ev); err == nil {
					onEvent(ev, id)
				}
			}
			id, data = "", ""
		case strings.HasPrefix(line, "id:"):
			id = strings.TrimSpace(line[3:])
		case strings.HasPrefix(line, "data:"):
			data += strings.TrimSpace(line[5:])
		}
	}
	if err := sc.Err(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("stream events: %w", err)
	}
	return fmt.Errorf("stream events: %w", io.ErrUnexpectedEOF)
}
