package llm

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// OpenAI speaks the chat-completions protocol (POST {base}/chat/completions).
type OpenAI struct{ t *transport }

type openAIRequest struct {
	Model       string    `json:"model"`
	Messages    []Message `json:"messages"`
	MaxTokens   int       `json:"max_tokens,omitempty"`
	Temperature *float64  `json:"temperature,omitempty"`
}

type openAIResponse struct {
	Model   string `json:"model"`
	Choices []struct {
		Message struct {
			Content *string `json:"content"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
}

// Complete sends req and returns the first choice's text.
func (o *OpenAI) Complete(ctx context.Context, req Request) (Response, error) {
	start := time.Now()
	msgs := make([]Message, 0, len(req.Messages)+1)
	if req.System != "" {
		msgs = append(msgs, Message{Role: "system", Content: req.System})
	}
	msgs = append(msgs, req.Messages...)
	body := openAIRequest{Model: o.t.cfg.Model, Messages: msgs, MaxTokens: req.MaxTokens, Temperature: req.Temperature}
	if body.MaxTokens == 0 {
		body.MaxTokens = DefaultMaxTokens
	}
	headers := map[string]string{}
	if o.t.cfg.APIKey != "" {
		headers["Authorization"] = "Bearer " + o.t.cfg.APIKey
	}
	var out openAIResponse
	retries, err := o.t.post(ctx, "/chat/completions", headers, body, &out)
	resp := Response{Retries: retries, Duration: time.Since(start)}
	if err != nil {
		return resp, err
	}
	resp.Model = out.Model
	resp.Usage = Usage{InputTokens: out.Usage.PromptTokens, OutputTokens: out.Usage.CompletionTokens}
	if len(out.Choices) == 0 || out.Choices[0].Message.Content == nil {
		return resp, fmt.Errorf("%w: chat completion from %s has no choices[0].message.content", ErrMalformed, o.t.cfg.BaseURL)
	}
	resp.Text = *out.Choices[0].Message.Content
	if strings.TrimSpace(resp.Text) == "" {
		return resp, fmt.Errorf("%w: model %s answered with empty text (finish_reason %q)", ErrMalformed, o.t.cfg.Model, out.Choices[0].FinishReason)
	}
	return resp, nil
}
