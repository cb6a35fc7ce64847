package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/events"
	whsig "github.com/sbxdev/sbx/sdk/webhook"
)

// maxDelivery bounds a webhook body.
const maxDelivery = 1 << 20

// delivery is an E2B webhook body in either of the shapes E2B has used:
// camelCase (public docs, sbx) or snake_case v2 (the orchestrator's struct).
type delivery struct {
	ID        string          `json:"id"`
	Version   string          `json:"version"`
	Type      string          `json:"type"`
	Timestamp string          `json:"timestamp"`
	EventData json.RawMessage `json:"eventData"`
	SandboxID string          `json:"sandboxId"`
	Template  string          `json:"sandboxTemplateId"`
	Build     string          `json:"sandboxBuildId"`
	Execution string          `json:"sandboxExecutionId"`
	Team      string          `json:"sandboxTeamId"`

	SnakeData      json.RawMessage `json:"event_data"`
	SnakeSandbox   string          `json:"sandbox_id"`
	SnakeTemplate  string          `json:"sandbox_template_id"`
	SnakeBuild     string          `json:"sandbox_build_id"`
	SnakeExecution string          `json:"sandbox_execution_id"`
	SnakeTeam      string          `json:"sandbox_team_id"`
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// toEvent converts a delivery into a log event.
func (d *delivery) toEvent() (*events.Event, error) {
	if d.ID == "" || d.Type == "" {
		return nil, errdefs.Invalid("webhook body needs id and type (an E2B lifecycle event)")
	}
	ev := &events.Event{ID: d.ID, Version: d.Version, Type: d.Type,
		SandboxID: or(d.SandboxID, d.SnakeSandbox), SandboxTemplateID: or(d.Template, d.SnakeTemplate),
		SandboxBuildID: or(d.Build, d.SnakeBuild), SandboxExecutionID: or(d.Execution, d.SnakeExecution),
		TeamID: or(d.Team, d.SnakeTeam)}
	raw := d.EventData
	if len(raw) == 0 || string(raw) == "null" {
		raw = d.SnakeData
	}
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &ev.EventData); err != nil {
			return nil, errdefs.Invalid("eventData must be an object: %v", err)
		}
	}
	if d.Timestamp != "" {
		ts, err := time.Parse(time.RFC3339Nano, d.Timestamp)
		if err != nil {
			return nil, errdefs.Invalid("timestamp %q is not RFC 3339", d.Timestamp)
		}
		ev.Timestamp = ts.UTC()
	}
	return ev, nil
}

// Ingest receives E2B webhooks, checks their e2b-signature and stores them.
type Ingest struct {
	secret string
	log    *events.Log
	logger *slog.Logger
}

// NewIngest returns the webhook receiver.
func NewIngest(secret string, log *events.Log, logger *slog.Logger) *Ingest {
	return &Ingest{secret: secret, log: log, logger: logger}
}

// ServeHTTP stores one delivery: 204 when stored (or already stored, as
// E2B retries), 401 for a bad signature (nothing stored), 400 for a body
// that is not an event.
func (in *Ingest) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxDelivery+1))
	if err != nil || len(body) > maxDelivery {
		errdefs.WriteHTTP(w, in.logger, errdefs.Invalid("webhook body unreadable or larger than %d bytes", maxDelivery))
		return
	}
	if err := whsig.VerifyE2B(in.secret, body, r.Header.Get(whsig.HeaderE2BSignature)); err != nil {
		in.logger.Warn("rejected webhook delivery with a bad signature", "err", err, "remote", r.RemoteAddr,
			"delivery", r.Header.Get(whsig.HeaderE2BDeliveryID))
		errdefs.WriteHTTP(w, nil, errdefs.Unauthenticated("invalid e2b-signature: check that --secret matches the webhook's signature secret"))
		return
	}
	var d delivery
	if err := json.Unmarshal(body, &d); err != nil {
		errdefs.WriteHTTP(w, in.logger, errdefs.Invalid("webhook body is not JSON: %v", err))
		return
	}
	ev, err := d.toEvent()
	if err != nil {
		errdefs.WriteHTTP(w, in.logger, err)
		return
	}
	if err := in.store(r.Context(), ev); err != nil {
		errdefs.WriteHTTP(w, in.logger, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (in *Ingest) store(ctx context.Context, ev *events.Event) error {
	seen, err := in.log.Has(ctx, ev.ID)
	if err != nil {
		return fmt.Errorf("check event %s: %w", ev.ID, err)
	}
	if seen {
		return nil // a retry of a delivery already stored
	}
	if err := in.log.Append(ctx, ev); err != nil {
		var e *errdefs.Error
		if errors.As(err, &e) {
			return err
		}
		return fmt.Errorf("store event %s: %w", ev.ID, err)
	}
	in.logger.Debug("stored webhook event", "type", ev.Type, "sandbox.id", ev.SandboxID)
	return nil
}
