// Package llm talks to large language models over plain HTTP: the OpenAI
// chat-completions protocol (OpenAI, Ollama, vLLM, llama.cpp server, LM
// Studio and most gateways) and Anthropic's Messages API. Both are simple
// JSON request/response exchanges, so no provider SDK is needed.
//
// Every client retries 429 and 5xx answers with exponential backoff that
// honours Retry-After, records token usage, and turns the failures a user
// can fix (bad key, unreachable server, timeout, nonsense reply) into
// errors that say what to do.
package llm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"
)

// Message is one turn of a conversation.
type Message struct {
	Role    string `json:"role"` // "user" or "assistant"
	Content string `json:"content"`
}

// Request is one completion request.
type Request struct {
	System    string
	Messages  []Message
	MaxTokens int // 0 means DefaultMaxTokens
	// Temperature is sent when non-nil; nil keeps the provider's default.
	Temperature *float64
}

// DefaultMaxTokens bounds a reply when Request.MaxTokens is 0. Anthropic
// requires a bound; generated programs rarely need more.
const DefaultMaxTokens = 4096

// Usage counts tokens as the provider reported them.
type Usage struct {
	InputTokens  int `json:"input_tokens"`
	OutputTokens int `json:"output_tokens"`
}

// Add returns the sum of two usages.
func (u Usage) Add(o Usage) Usage {
	return Usage{InputTokens: u.InputTokens + o.InputTokens, OutputTokens: u.OutputTokens + o.OutputTokens}
}

// Response is a completed reply.
type Response struct {
	Text  string
	Model string
	Usage Usage
	// Retries is how many times the request was re-sent after 429/5xx.
	Retries int
	// Duration is the wall time of the whole call, retries included.
	Duration time.Duration
}

// Provider names accepted by Config.Provider.
const (
	ProviderOpenAI    = "openai"
	ProviderAnthropic = "anthropic"
)

// Config selects and configures a provider.
type Config struct {
	// Provider is ProviderOpenAI or ProviderAnthropic; empty means
	// ProviderAnthropic when BaseURL is api.anthropic.com, else ProviderOpenAI.
	Provider string
	// BaseURL is the API root, e.g. https://api.openai.com/v1 or
	// http://localhost:11434/v1 (Ollama); "/chat/completions" or
	// "/v1/messages" is appended. Empty means the provider's public API.
	BaseURL string
	APIKey  string
	Model   string
	// Timeout bounds one HTTP attempt (not the retries); 0 means 2 minutes.
	Timeout time.Duration
	// MaxRetries is how often 429/5xx answers are retried; negative means
	// none, 0 means DefaultMaxRetries.
	MaxRetries int
}

// DefaultMaxRetries is the retry budget when Config.MaxRetries is 0.
const DefaultMaxRetries = 4

// Public API roots used when Config.BaseURL is empty.
const (
	OpenAIBaseURL    = "https://api.openai.com/v1"
	AnthropicBaseURL = "https://api.anthropic.com"
)

// ConfigFromEnv reads SBX_LLM_PROVIDER, SBX_LLM_BASE_URL, SBX_LLM_API_KEY,
// SBX_LLM_MODEL and SBX_LLM_TIMEOUT (seconds or a Go duration). Flags
// override the result field by field.
func ConfigFromEnv() (Config, error) {
	cfg := Config{
		Provider: os.Getenv("SBX_LLM_PROVIDER"),
		BaseURL:  os.Getenv("SBX_LLM_BASE_URL"),
		APIKey:   os.Getenv("SBX_LLM_API_KEY"),
		Model:    os.Getenv("SBX_LLM_MODEL"),
	}
	if v := os.Getenv("SBX_LLM_TIMEOUT"); v != "" {
		d, err := parseDuration(v)
		if err != nil {
			return cfg, fmt.Errorf("SBX_LLM_TIMEOUT: %w", err)
		}
		cfg.Timeout = d
	}
	return cfg, nil
}

func parseDuration(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("invalid duration %q: want seconds (120) or a Go duration (2m)", s)
	}
	return d, nil
}

// Validate fills defaults and checks that the config can work.
func (c *Config) Validate() error {
	if c.Provider == "" {
		c.Provider = ProviderOpenAI
		if strings.Contains(c.BaseURL, "anthropic.com") {
			c.Provider = ProviderAnthropic
		}
	}
	switch c.Provider {
	case ProviderOpenAI:
		if c.BaseURL == "" {
			c.BaseURL = OpenAIBaseURL
		}
	case ProviderAnthropic:
		if c.BaseURL == "" {
			c.BaseURL = AnthropicBaseURL
		}
	default:
		return fmt.Errorf("unknown LLM provider %q: use %q (also Ollama, vLLM, llama.cpp, LM Studio) or %q",
			c.Provider, ProviderOpenAI, ProviderAnthropic)
	}
	if !strings.HasPrefix(c.BaseURL, "http://") && !strings.HasPrefix(c.BaseURL, "https://") {
		return fmt.Errorf("invalid LLM base URL %q: want an http(s) URL such as %s or http://localhost:11434/v1", c.BaseURL, OpenAIBaseURL)
	}
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	if c.Model == "" {
		return errors.New("no LLM model: set SBX_LLM_MODEL or --llm-model (e.g. gpt-4o-mini, claude-sonnet-4-5, qwen2.5-coder)")
	}
	if c.APIKey == "" && c.BaseURL == OpenAIBaseURL || c.APIKey == "" && c.Provider == ProviderAnthropic && c.BaseURL == AnthropicBaseURL {
		return fmt.Errorf("no LLM API key: set SBX_LLM_API_KEY or --llm-api-key for %s", c.BaseURL)
	}
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Minute
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = DefaultMaxRetries
	}
	if c.MaxRetries < 0 {
		c.MaxRetries = 0
	}
	return nil
}

// LogValue keeps the API key out of logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("provider", c.Provider), slog.String("base_url", c.BaseURL),
		slog.String("model", c.Model), slog.Bool("api_key_set", c.APIKey != ""))
}

// Client completes requests with one provider.
type Client interface {
	Complete(ctx context.Context, req Request) (Response, error)
}

// New returns the client for cfg.Provider.
func New(cfg Config, log *slog.Logger) (Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t := newTransport(cfg, log)
	if cfg.Provider == ProviderAnthropic {
		return &Anthropic{t: t}, nil
	}
	return &OpenAI{t: t}, nil
}
