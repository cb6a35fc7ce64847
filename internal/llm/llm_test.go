package llm

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// scripted is a provider double: it answers each request with the next
// scripted reply and records what it received.
type scripted struct {
	mu      sync.Mutex
	replies []reply
	got     []recorded
}

type reply struct {
	status  int
	headers map[string]string
	body    string
	delay   time.Duration
}

type recorded struct {
	path    string
	headers http.Header
	body    map[string]any
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	var body map[string]any
	_ = json.Unmarshal(raw, &body)
	s.mu.Lock()
	s.got = append(s.got, recorded{path: r.URL.Path, headers: r.Header.Clone(), body: body})
	var rep reply
	if len(s.replies) > 0 {
		rep, s.replies = s.replies[0], s.replies[1:]
	} else {
		rep = reply{status: 500, body: `{"error":{"message":"script exhausted"}}`}
	}
	s.mu.Unlock()
	if rep.delay > 0 {
		select {
		case <-time.After(rep.delay):
		case <-r.Context().Done():
			return
		}
	}
	for k, v := range rep.headers {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(rep.status)
	io.WriteString(w, rep.body)
}

func (s *scripted) requests() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recorded(nil), s.got...)
}

const openAIOK = `{"id":"c1","object":"chat.completion","model":"m-1","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}`

const anthropicOK = `{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"hel"},{"type":"text","text":"lo"}],"stop_reason":"end_turn","usage":{"input_tokens":12,"output_tokens":4}}`

// newClient starts the scripted server and a client for it whose retry
// sleeps are recorded instead of slept.
func newClient(t *testing.T, provider string, timeout time.Duration, replies ...reply) (Client, *scripted, *[]time.Duration) {
	t.Helper()
	s := &scripted{replies: replies}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	base := srv.URL + "/v1"
	if provider == ProviderAnthropic {
		base = srv.URL
	}
	c, err := New(Config{Provider: provider, BaseURL: base, APIKey: "sk-test", Model: "m", Timeout: timeout, MaxRetries: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var waits []time.Duration
	var tr *transport
	switch c := c.(type) {
	case *OpenAI:
		tr = c.t
	case *Anthropic:
		tr = c.t
	}
	tr.sleep = func(ctx context.Context, d time.Duration) error { waits = append(waits, d); return ctx.Err() }
	return c, s, &waits
}

func TestProviderOutcomes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		provider  string
		timeout   time.Duration
		replies   []reply
		wantText  string
		wantUsage Usage
		wantErr   error
		errHas    string
		wantWaits []time.Duration // nil: not checked; exact Retry-After waits otherwise
		wantCalls int
	}{
		{name: "openai ok", provider: ProviderOpenAI, replies: []reply{{status: 200, body: openAIOK}},
			wantText: "hello", wantUsage: Usage{11, 3}, wantCalls: 1},
		{name: "401 is final and names the key", provider: ProviderOpenAI,
			replies: []reply{{status: 401, body: `{"error":{"message":"Incorrect API key provided"}}`}},
			wantErr: ErrAuth, errHas: "Incorrect API key provided", wantCalls: 1},
		{name: "429 then success honours Retry-After", provider: ProviderOpenAI,
			replies: []reply{
				{status: 429, headers: map[string]string{"Retry-After": "2"}, body: `{"error":{"message":"slow down"}}`},
				{status: 200, body: openAIOK}},
			wantText: "hello", wantUsage: Usage{11, 3}, wantWaits: []time.Duration{2 * time.Second}, wantCalls: 2},
		{name: "503 twice then success", provider: ProviderOpenAI,
			replies:  []reply{{status: 503, body: `oops`}, {status: 502, body: `bad gateway`}, {status: 200, body: openAIOK}},
			wantText: "hello", wantUsage: Usage{11, 3}, wantCalls: 3},
		{name: "429 forever gives up with the category", provider: ProviderOpenAI,
			replies: []reply{{status: 429, body: `{}`}, {status: 429, body: `{}`}, {status: 429, body: `{}`}, {status: 429, body: `{"error":{"message":"quota"}}`}},
			wantErr: ErrRateLimited, errHas: "gave up after 3 retries", wantCalls: 4},
		{name: "timeout", provider: ProviderOpenAI, timeout: 50 * time.Millisecond,
			replies: []reply{{status: 200, body: openAIOK, delay: 5 * time.Second}},
			wantErr: ErrTimeout, errHas: "SBX_LLM_TIMEOUT", wantCalls: 1},
		{name: "malformed: not JSON", provider: ProviderOpenAI, replies: []reply{{status: 200, body: `<html>proxy</html>`}},
			wantErr: ErrMalformed, errHas: "not JSON", wantCalls: 1},
		{name: "malformed: no choices", provider: ProviderOpenAI, replies: []reply{{status: 200, body: `{"choices":[]}`}},
			wantErr: ErrMalformed, errHas: "no choices", wantCalls: 1},
		{name: "400 is final", provider: ProviderOpenAI, replies: []reply{{status: 400, body: `{"error":{"message":"model not found"}}`}},
			wantErr: ErrRequest, errHas: "model not found", wantCalls: 1},
		{name: "anthropic ok", provider: ProviderAnthropic, replies: []reply{{status: 200, body: anthropicOK}},
			wantText: "hello", wantUsage: Usage{12, 4}, wantCalls: 1},
		{name: "anthropic overloaded 529 then ok", provider: ProviderAnthropic,
			replies: []reply{
				{status: 529, body: `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`},
				{status: 200, body: anthropicOK}},
			wantText: "hello", wantUsage: Usage{12, 4}, wantCalls: 2},
		{name: "anthropic 401", provider: ProviderAnthropic,
			replies: []reply{{status: 401, body: `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}`}},
			wantErr: ErrAuth, errHas: "invalid x-api-key", wantCalls: 1},
		{name: "anthropic malformed: error type", provider: ProviderAnthropic, replies: []reply{{status: 200, body: `{"type":"error"}`}},
			wantErr: ErrMalformed, wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 10 * time.Second
			}
			c, s, waits := newClient(t, tt.provider, timeout, tt.replies...)
			resp, err := c.Complete(t.Context(), Request{System: "be brief", Messages: []Message{{Role: "user", Content: "hi"}}})
			if got := len(s.requests()); got != tt.wantCalls {
				t.Errorf("server saw %d requests, want %d", got, tt.wantCalls)
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.errHas) {
					t.Errorf("err %q does not contain %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.Text != tt.wantText || resp.Usage != tt.wantUsage {
				t.Errorf("got text %q usage %+v, want %q %+v", resp.Text, resp.Usage, tt.wantText, tt.wantUsage)
			}
			if resp.Retries != tt.wantCalls-1 {
				t.Errorf("Retries = %d, want %d", resp.Retries, tt.wantCalls-1)
			}
			if tt.wantWaits != nil && !equalDurations(*waits, tt.wantWaits) {
				t.Errorf("waited %v, want %v", *waits, tt.wantWaits)
			}
		})
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// The request shapes are what the two protocols specify.
func TestWireFormat(t *testing.T) {
	t.Parallel()
	t.Run("openai", func(t *testing.T) {
		c, s, _ := newClient(t, ProviderOpenAI, time.Minute, reply{status: 200, body: openAIOK})
		if _, err := c.Complete(t.Context(), Request{System: "sys", Messages: []Message{{Role: "user", Content: "q"}}}); err != nil {
			t.Fatal(err)
		}
		r := s.requests()[0]
		if r.path != "/v1/chat/completions" || r.headers.Get("Authorization") != "Bearer sk-test" {
			t.Errorf("path %q auth %q", r.path, r.headers.Get("Authorization"))
		}
		msgs, _ := r.body["messages"].([]any)
		if r.body["model"] != "m" || len(msgs) != 2 || msgs[0].(map[string]any)["role"] != "system" {
			t.Errorf("body = %v", r.body)
		}
	})
	t.Run("anthropic", func(t *testing.T) {
		c, s, _ := newClient(t, ProviderAnthropic, time.Minute, reply{status: 200, body: anthropicOK})
		if _, err := c.Complete(t.Context(), Request{System: "sys", Messages: []Message{{Role: "user", Content: "q"}}}); err != nil {
			t.Fatal(err)
		}
		r := s.requests()[0]
		if r.path != "/v1/messages" || r.headers.Get("x-api-key") != "sk-test" || r.headers.Get("anthropic-version") != AnthropicVersion {
			t.Errorf("path %q headers %v", r.path, r.headers)
		}
		msgs, _ := r.body["messages"].([]any)
		if r.body["system"] != "sys" || len(msgs) != 1 || r.body["max_tokens"] != float64(DefaultMaxTokens) {
			t.Errorf("body = %v", r.body)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     Config
		errHas  string
		wantPrv string
	}{
		{"local openai-compatible needs no key", Config{BaseURL: "http://localhost:11434/v1", Model: "qwen"}, "", ProviderOpenAI},
		{"anthropic inferred", Config{BaseURL: "https://api.anthropic.com", Model: "c", APIKey: "k"}, "", ProviderAnthropic},
		{"no model", Config{BaseURL: "http://x/v1"}, "SBX_LLM_MODEL", ""},
		{"public API needs key", Config{Model: "gpt"}, "SBX_LLM_API_KEY", ""},
		{"bad provider", Config{Provider: "gemini", Model: "g"}, "unknown LLM provider", ""},
		{"bad URL", Config{BaseURL: "localhost:8080", Model: "g"}, "invalid LLM base URL", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.errHas == "" {
				if err != nil || tt.cfg.Provider != tt.wantPrv {
					t.Fatalf("err %v provider %q, want nil %q", err, tt.cfg.Provider, tt.wantPrv)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("err = %v, want one containing %q", err, tt.errHas)
			}
		})
	}
}

func TestUnreachableServerIsUnavailable(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c, err := New(Config{BaseURL: url + "/v1", Model: "m", MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Complete(t.Context(), Request{Messages: []Message{{Role: "user", Content: "q"}}})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "SBX_LLM_BASE_URL") {
		t.Fatalf("err = %v, want ErrUnavailable naming SBX_LLM_BASE_URL", err)
	}
}
