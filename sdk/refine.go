package sdk

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// RefineOptions describe a server-side iterative refinement: the server's
// LLM (SBX_LLM_* in the environment of `sbx serve`) writes code for
// Requirement, sandboxes of Template run it, errors go back to the LLM,
// until it passes or MaxAttempts rounds failed.
type RefineOptions struct {
	Requirement string
	// Template defaults to "code-interpreter"; Language to "python"
	// (others: bash, javascript, ruby, go, r run as commands).
	Template string
	Language string
	// MaxAttempts defaults to 3; BestOf runs that many candidates per round.
	MaxAttempts int
	BestOf      int
	// TestCode runs after the program and must not fail; Expect is a
	// regular expression the program's stdout must match.
	TestCode string
	Expect   string
	// RunTimeout bounds one execution (default 60 s), whole seconds.
	RunTimeout time.Duration
	// Model overrides the server's SBX_LLM_MODEL.
	Model string
	// ID is the correlation ID put in every sandbox's metadata as
	// refinement_id; empty lets the server choose.
	ID       string
	Metadata map[string]string
	// OnAttempt is called for every attempt as it finishes.
	OnAttempt func(RefineAttempt)
}

// RefineError is an error raised by generated code.
type RefineError struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	Traceback string `json:"traceback,omitempty"`
}

// RefineOutput is one rich result of an attempt.
type RefineOutput struct {
	Formats []string `json:"formats"`
	Text    string   `json:"text,omitempty"`
}

// TokenUsage counts LLM tokens.
type TokenUsage struct {
	InputTokens  int `json:"input_tokens"`
	OutputTokens int `json:"output_tokens"`
}

// RefineAttempt is one generate-execute-validate round.
type RefineAttempt struct {
	Number         int            `json:"number"`
	Candidate      int            `json:"candidate,omitempty"`
	Passed         bool           `json:"passed"`
	Code           string         `json:"code"`
	Stdout         string         `json:"stdout"`
	Stderr         string         `json:"stderr"`
	Error          *RefineError   `json:"error,omitempty"`
	Validation     string         `json:"validation,omitempty"`
	Results        []RefineOutput `json:"results,omitempty"`
	Model          string         `json:"model,omitempty"`
	Tokens         TokenUsage     `json:"tokens"`
	SandboxID      string         `json:"sandbox_id,omitempty"`
	SandboxSeconds float64        `json:"sandbox_seconds"`
	SandboxCostUSD float64        `json:"sandbox_cost_usd"`
	StartedAt      time.Time      `json:"started_at"`
	DurationMS     float64        `json:"duration_ms"`
	LLMMS          float64        `json:"llm_ms"`
	OverheadMS     float64        `json:"overhead_ms"`
}

// RefineEnvironment is what the prompt said about the template; the server
// probes a template once per team and reuses the findings for a while.
type RefineEnvironment struct {
	Template       string   `json:"template"`
	Description    string   `json:"description"`
	System         string   `json:"system,omitempty"`
	Packages       []string `json:"packages,omitempty"`
	ProbeSandboxID string   `json:"probe_sandbox_id,omitempty"`
	CPUs           int      `json:"cpus"`
	MemoryMB       int      `json:"memory_mb"`
}

// Refinement is a whole refinement as the server reports it.
type Refinement struct {
	ID             string             `json:"id"`
	Status         string             `json:"status"` // running, succeeded, failed
	Success        bool               `json:"success"`
	Requirement    string             `json:"requirement"`
	Template       string             `json:"template"`
	Language       string             `json:"language"`
	MaxAttempts    int                `json:"max_attempts"`
	Environment    *RefineEnvironment `json:"environment,omitempty"`
	Attempts       []RefineAttempt    `json:"attempts"`
	Code           string             `json:"code"`
	Output         string             `json:"output"`
	Error          string             `json:"error,omitempty"`
	LastError      *RefineError       `json:"last_error,omitempty"`
	Tokens         TokenUsage         `json:"tokens"`
	SandboxCostUSD float64            `json:"sandbox_cost_usd"`
	StartedAt      time.Time          `json:"started_at"`
	FinishedAt     time.Time          `json:"finished_at"`
	DurationMS     float64            `json:"duration_ms"`
}

// ErrRefinementStreamEnded means the server's stream stopped before the
// final result; GetRefinement can still tell how it ended.
var ErrRefinementStreamEnded = errors.New("refinement stream ended before the result")

// RefineCode runs an iterative refinement on the server and waits for it,
// calling opts.OnAttempt as attempts finish. Code that never passes is a
// Refinement with Success false and a nil error; the error is for
// failures of the machinery (no LLM configured, template missing...),
// in which case the Refinement is returned too when the server sent one.
func (c *Client) RefineCode(ctx context.Context, opts RefineOptions) (*Refinement, error) {
	if strings.TrimSpace(opts.Requirement) == "" {
		return nil, errors.New("refine code: empty requirement")
	}
	body := map[string]any{"requirement": opts.Requirement}
	for k, v := range map[string]string{"template": opts.Template, "language": opts.Language, "test_code": opts.TestCode,
		"expect": opts.Expect, "model": opts.Model, "id": opts.ID} {
		if v != "" {
			body[k] = v
		}
	}
	if opts.MaxAttempts > 0 {
		body["max_attempts"] = opts.MaxAttempts
	}
	if opts.BestOf > 0 {
		body["best_of"] = opts.BestOf
	}
	if opts.RunTimeout > 0 {
		body["run_timeout"] = seconds(opts.RunTimeout)
	}
	if len(opts.Metadata) > 0 {
		body["metadata"] = opts.Metadata
	}
	data, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("refine code: %w", err)
	}
	u := *c.apiURL
	u.Path = strings.TrimRight(u.Path, "/") + "/refinements"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("refine code: %w", err)
	}
	req.Header.Set("X-API-Key", c.apiKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("refine code: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("refine code: %w", apiErrorFrom(resp))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	var started *Refinement
	for sc.Scan() {
		var line struct {
			Type       string         `json:"type"`
			Refinement *Refinement    `json:"refinement"`
			Attempt    *RefineAttempt `json:"attempt"`
			Error      string         `json:"error"`
		}
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return started, fmt.Errorf("refine code: bad stream line %.200q: %w", sc.Bytes(), err)
		}
		switch line.Type {
		case "started":
			started = line.Refinement
		case "attempt":
			if line.Attempt != nil && opts.OnAttempt != nil {
				opts.OnAttempt(*line.Attempt)
			}
		case "result":
			return line.Refinement, nil
		case "error":
			return line.Refinement, fmt.Errorf("refine code: %s", line.Error)
		}
	}
	if err := sc.Err(); err != nil {
		return started, fmt.Errorf("refine code: %w", err)
	}
	return started, fmt.Errorf("refine code: %w", ErrRefinementStreamEnded)
}

// GetRefinement reports a refinement (running or finished) by ID.
func (c *Client) GetRefinement(ctx context.Context, id string) (*Refinement, error) {
	if id == "" || strings.ContainsAny(id, "/?#%") {
		return nil, fmt.Errorf("invalid refinement ID %q", id)
	}
	var out Refinement
	if _, err := c.apiDo(ctx, http.MethodGet, "/refinements/"+id, nil, nil, &out); err != nil {
		return nil, fmt.Errorf("get refinement %s: %w", id, err)
	}
	return &out, nil
}
