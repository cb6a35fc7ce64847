package llm

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// AnthropicVersion is the Messages API version sbx speaks.
const AnthropicVersion = "2023-06-01"

// Anthropic speaks the Messages API (POST {base}/v1/messages).
type Anthropic struct{ t *transport }

type anthropicRequest struct {
	Model       string    `json:"model"`
	System      string    `json:"system,omitempty"`
	Messages    []Message `json:"messages"`
	MaxTokens   int       `json:"max_tokens"`
	Temperature *float64  `json:"temperature,omitempty"`
}

type anthropicResponse struct {
	Type    string `json:"type"`
	Model   string `json:"model"`
	Content []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	} `json:"content"`
	StopReason string `json:"stop_reason"`
	Usage      struct {
		InputTokens  int `json:"input_tokens"`
		OutputTokens int `json:"output_tokens"`
	} `json:"usage"`
}

// Complete sends req and returns the concatenated text blocks.
func (a *Anthropic) Complete(ctx context.Context, req Request) (Response, error) {
	start := time.Now()
	body := anthropicRequest{Model: a.t.cfg.Model, System: req.System, Messages: req.Messages,
		MaxTokens: req.MaxTokens, Temperature: req.Temperature}
	if body.MaxTokens == 0 {
		body.MaxTokens = DefaultMaxTokens
	}
	headers := map[string]string{"anthropic-version": AnthropicVersion}
	if a.t.cfg.APIKey != "" {
		headers["x-api-key"] = a.t.cfg.APIKey
	}
	path := "/v1/messages"
	if strings.HasSuffix(a.t.cfg.BaseURL, "/v1") {
		path = "/messages" // base URL given with the version, as OpenAI-style configs do
	}
	var out anthropicResponse
	retries, err := a.t.post(ctx, path, headers, body, &out)
	resp := Response{Retries: retries, Duration: time.Since(start)}
	if err != nil {
		return resp, err
	}
	resp.Model = out.Model
	resp.Usage = Usage{InputTokens: out.Usage.InputTokens, OutputTokens: out.Usage.OutputTokens}
	if out.Type != "message" {
		return resp, fmt.Errorf("%w: Messages API reply from %s has type %q, want \"message\"", ErrMalformed, a.t.cfg.BaseURL, out.Type)
	}
	var sb strings.Builder
	for _, c := range out.Content {
		if c.Type == "text" {
			sb.WriteString(c.Text)
		}
	}
	resp.Text = sb.String()
	if strings.TrimSpace(resp.Text) == "" {
		return resp, fmt.Errorf("%w: model %s answered with no text (stop_reason %q)", ErrMalformed, a.t.cfg.Model, out.StopReason)
	}
	return resp, nil
}
