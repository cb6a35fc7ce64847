package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/sbxdev/sbx/sdk"
	"github.com/sbxdev/sbx/sdk/webhook"
)

// Generator is the seed's AdvancedIterativeCodeGenerator: a template with
// the packages preinstalled (fast start), a webhook that watches the
// generation's sandboxes come and go (observability), and iterative
// refinement (working code). The loop itself runs in sbx (POST
// /refinements), which tags every sandbox with refinement_id.
type Generator struct {
	Client      *sdk.Client
	APIURL      string // for the webhook REST calls, which the SDK does not wrap
	APIKey      string
	Template    string
	MaxAttempts int
	// WebhookURL is where sbx can reach Monitor (e.g. http://127.0.0.1:8789).
	WebhookURL string
	Monitor    *Monitor
	Out        io.Writer
}

// Outcome is what Generate returns, shaped like the seed's dict.
type Outcome struct {
	Success      bool    `json:"success"`
	Code         string  `json:"code,omitempty"`
	Output       string  `json:"output,omitempty"`
	Attempts     int     `json:"attempts"`
	TemplateUsed string  `json:"template_used"`
	Error        string  `json:"error,omitempty"`
	LastError    string  `json:"last_error,omitempty"`
	CostUSD      float64 `json:"sandbox_cost_usd"`
	Created      int     `json:"sandboxes_created_seen_by_webhook"`
	Killed       int     `json:"sandboxes_killed_seen_by_webhook"`
}

// Generate registers a webhook for the correlation ID, runs the
// refinement, and removes the webhook again.
func (g *Generator) Generate(ctx context.Context, requirement, correlationID string) (*Outcome, error) {
	webhookID, err := g.setupMonitoring(ctx, correlationID)
	if err != nil {
		return nil, err
	}
	defer g.cleanupMonitoring(context.WithoutCancel(ctx), webhookID)

	ref, err := g.Client.RefineCode(ctx, sdk.RefineOptions{
		Requirement: requirement,
		Template:    g.Template,
		MaxAttempts: g.MaxAttempts,
		ID:          correlationID,
		OnAttempt: func(a sdk.RefineAttempt) {
			verdict := "succeeded"
			if a.Error != nil {
				verdict = "failed: " + a.Error.Name + ": " + a.Error.Value
			} else if a.Validation != "" {
				verdict = "rejected: " + a.Validation
			}
			fmt.Fprintf(g.Out, "[%s] attempt %d/%d in sandbox %s %s\n", correlationID, a.Number, g.MaxAttempts, a.SandboxID, verdict)
		},
	})
	if err != nil {
		return nil, err
	}
	out := &Outcome{Success: ref.Success, Attempts: len(ref.Attempts), TemplateUsed: ref.Template, CostUSD: ref.SandboxCostUSD}
	if ref.Success {
		out.Code, out.Output = ref.Code, ref.Output
	} else {
		out.Error = "Failed after max attempts"
		if ref.LastError != nil {
			out.LastError = ref.LastError.Name + ": " + ref.LastError.Value
		}
	}
	// Every attempt's sandbox was created and killed; wait for the webhook
	// to have seen them all (deliveries are asynchronous).
	out.Created, out.Killed = g.Monitor.WaitFor(ctx, correlationID, len(ref.Attempts))
	return out, nil
}

func (g *Generator) setupMonitoring(ctx context.Context, correlationID string) (string, error) {
	body := map[string]any{
		"name":            "Generation " + correlationID,
		"url":             strings.TrimRight(g.WebhookURL, "/") + "/generation/" + correlationID,
		"enabled":         true,
		"events":          []string{"sandbox.lifecycle.created", "sandbox.lifecycle.killed"},
		"signatureSecret": g.Monitor.Secret,
	}
	var created struct {
		ID string `json:"id"`
	}
	if err := g.api(ctx, http.MethodPost, "/events/webhooks", body, &created); err != nil {
		return "", fmt.Errorf("register webhook (is sbx serve started with --webhook-allow-private for a local receiver?): %w", err)
	}
	return created.ID, nil
}

func (g *Generator) cleanupMonitoring(ctx context.Context, id string) {
	if err := g.api(ctx, http.MethodDelete, "/events/webhooks/"+id, nil, nil); err != nil {
		fmt.Fprintf(g.Out, "remove webhook %s: %v\n", id, err)
	}
}

func (g *Generator) api(ctx context.Context, method, path string, in, out any) error {
	var rd io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(g.APIURL, "/")+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("X-API-Key", g.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// Monitor receives signed lifecycle webhooks and tracks the sandboxes of
// each generation by the refinement_id in their metadata.
type Monitor struct {
	Secret string
	Out    io.Writer

	mu      sync.Mutex
	changed chan struct{}
	created map[string]map[string]bool // correlation ID -> sandbox IDs
	killed  map[string]map[string]bool
}

// NewMonitor returns a monitor with a fresh signing secret.
func NewMonitor(out io.Writer) *Monitor {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return &Monitor{Secret: hex.EncodeToString(b), Out: out, changed: make(chan struct{}),
		created: map[string]map[string]bool{}, killed: map[string]map[string]bool{}}
}

type lifecycleEvent struct {
	Type      string `json:"type"`
	SandboxID string `json:"sandboxId"`
	EventData struct {
		Metadata map[string]string `json:"sandbox_metadata"`
	} `json:"eventData"`
}

// ServeHTTP handles POST /generation/{correlation-id}.
func (m *Monitor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	if err := webhook.VerifyE2B(m.Secret, body, r.Header.Get(webhook.HeaderE2BSignature)); err != nil {
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var ev lifecycleEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		http.Error(w, "bad event", http.StatusBadRequest)
		return
	}
	corr := ev.EventData.Metadata["refinement_id"]
	if want := strings.TrimPrefix(r.URL.Path, "/generation/"); corr == "" || corr != want {
		w.WriteHeader(http.StatusNoContent) // another generation's (or untagged) sandbox
		return
	}
	phase := "attempt " + ev.EventData.Metadata["refinement_attempt"]
	if p := ev.EventData.Metadata["refinement_phase"]; p != "" {
		phase = p
	}
	m.mu.Lock()
	set := m.created
	verb := "created"
	if ev.Type == "sandbox.lifecycle.killed" {
		set, verb = m.killed, "killed"
	}
	if set[corr] == nil {
		set[corr] = map[string]bool{}
	}
	set[corr][ev.SandboxID] = true
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
	fmt.Fprintf(m.Out, "  webhook: sandbox %s %s (%s, refinement %s)\n", ev.SandboxID, verb, phase, corr)
	w.WriteHeader(http.StatusNoContent)
}

// Counts returns how many sandboxes of a generation were seen created and killed.
func (m *Monitor) Counts(corr string) (created, killed int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.created[corr]), len(m.killed[corr])
}

// WaitFor waits until at least n sandboxes of corr were seen created and
// killed, or ctx ends, and returns the counts.
func (m *Monitor) WaitFor(ctx context.Context, corr string, n int) (created, killed int) {
	for {
		m.mu.Lock()
		ch := m.changed
		created, killed = len(m.created[corr]), len(m.killed[corr])
		m.mu.Unlock()
		if created >= n && killed >= n {
			return created, killed
		}
		select {
		case <-ctx.Done():
			return created, killed
		case <-ch:
		}
	}
}
