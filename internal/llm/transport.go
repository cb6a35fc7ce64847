package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Error categories, checked with errors.Is.
var (
	// ErrAuth: the provider rejected the API key (401/403).
	ErrAuth = errors.New("LLM authentication failed")
	// ErrRateLimited: still 429 after every retry.
	ErrRateLimited = errors.New("LLM rate limited")
	// ErrUnavailable: still 5xx after every retry, or the server is unreachable.
	ErrUnavailable = errors.New("LLM server unavailable")
	// ErrTimeout: one attempt took longer than Config.Timeout.
	ErrTimeout = errors.New("LLM request timed out")
	// ErrMalformed: the reply is not the protocol's JSON or has no text.
	ErrMalformed = errors.New("malformed LLM reply")
	// ErrRequest: the provider refused the request (4xx other than 401/403/429).
	ErrRequest = errors.New("LLM request rejected")
)

// HTTPError is a non-2xx answer; it wraps one of the categories above.
type HTTPError struct {
	Status  int
	Message string // the provider's own error message, if it sent one
	kind    error
	hint    string
}

func (e *HTTPError) Error() string {
	msg := fmt.Sprintf("%v: HTTP %d", e.kind, e.Status)
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.hint != "" {
		msg += " (" + e.hint + ")"
	}
	return msg
}

func (e *HTTPError) Unwrap() error { return e.kind }

// maxBackoff caps one wait between retries, Retry-After included: a
// provider asking for minutes is better reported than waited for.
const maxBackoff = 60 * time.Second

// transport sends JSON to one provider with retries.
type transport struct {
	cfg  Config
	http *http.Client
	log  *slog.Logger
	// sleep waits between retries; tests replace it to run without delays.
	sleep func(ctx context.Context, d time.Duration) error
	// baseBackoff is the first retry delay without Retry-After.
	baseBackoff time.Duration
}

func newTransport(cfg Config, log *slog.Logger) *transport {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &transport{cfg: cfg, http: &http.Client{}, log: log, sleep: sleepCtx, baseBackoff: 500 * time.Millisecond}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// post sends body to path and decodes a 2xx JSON answer into out, retrying
// 429 and 5xx. It returns how many retries it made.
func (t *transport) post(ctx context.Context, path string, headers map[string]string, body, out any) (int, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return 0, fmt.Errorf("encode LLM request: %w", err)
	}
	url := t.cfg.BaseURL + path
	for attempt := 0; ; attempt++ {
		raw, wait, err := t.once(ctx, url, headers, data)
		if err == nil {
			if err := json.Unmarshal(raw, out); err != nil {
				return attempt, fmt.Errorf("%w from %s: not JSON (%v): %.200q", ErrMalformed, url, err, raw)
			}
			return attempt, nil
		}
		if wait < 0 || attempt >= t.cfg.MaxRetries {
			if wait >= 0 && attempt > 0 {
				return attempt, fmt.Errorf("%w (gave up after %d retries)", err, attempt)
			}
			return attempt, err
		}
		if wait == 0 {
			// Exponential backoff with jitter so parallel loops spread out.
			wait = t.baseBackoff << attempt
			wait += time.Duration(rand.Int64N(int64(wait)/2 + 1))
		}
		wait = min(wait, maxBackoff)
		t.log.Warn("LLM request failed; retrying", "err", err, "retry", attempt+1, "wait", wait)
		if err := t.sleep(ctx, wait); err != nil {
			return attempt, fmt.Errorf("LLM request to %s: %w", url, err)
		}
	}
}

// once makes one HTTP attempt. wait < 0 means the error is final; wait >= 0
// means retry, after wait (0 = choose a backoff).
func (t *transport) once(ctx context.Context, url string, headers map[string]string, data []byte) ([]byte, time.Duration, error) {
	actx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, url, bytes.NewReader(data))
	if err != nil {
		return nil, -1, fmt.Errorf("LLM request to %s: %w", url, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := t.http.Do(req)
	if err == nil {
		defer resp.Body.Close()
		var raw []byte
		raw, err = io.ReadAll(io.LimitReader(resp.Body, 32<<20))
		if err == nil {
			if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
				return raw, 0, nil
			}
			return nil, retryAfter(resp), t.statusError(resp.StatusCode, raw)
		}
	}
	switch {
	case ctx.Err() != nil:
		return nil, -1, fmt.Errorf("LLM request to %s: %w", url, ctx.Err())
	case actx.Err() != nil:
		return nil, -1, fmt.Errorf("%w after %v waiting for %s (model %s): raise SBX_LLM_TIMEOUT or --llm-timeout for slow models",
			ErrTimeout, t.cfg.Timeout, url, t.cfg.Model)
	}
	// Connection refused or reset: the server may be restarting, retry.
	return nil, 0, fmt.Errorf("%w: %s: %v (is the LLM server running? check SBX_LLM_BASE_URL)", ErrUnavailable, url, err)
}

// statusError classifies a non-2xx answer.
func (t *transport) statusError(status int, body []byte) *HTTPError {
	e := &HTTPError{Status: status, Message: providerMessage(body)}
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		e.kind, e.hint = ErrAuth, "check SBX_LLM_API_KEY or --llm-api-key"
	case status == http.StatusTooManyRequests:
		e.kind = ErrRateLimited
	case status >= 500:
		e.kind = ErrUnavailable
	case status == http.StatusNotFound:
		e.kind, e.hint = ErrRequest, fmt.Sprintf("check the base URL %s and the model %q", t.cfg.BaseURL, t.cfg.Model)
	default:
		e.kind = ErrRequest
	}
	return e
}

// retryAfter says whether and when to retry a non-2xx answer: -1 for
// never, 0 for "choose a backoff", else the server's Retry-After.
func retryAfter(resp *http.Response) time.Duration {
	if resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode < 500 {
		return -1
	}
	v := strings.TrimSpace(resp.Header.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil && n >= 0 {
		return max(time.Duration(n*float64(time.Second)), time.Millisecond)
	}
	if at, err := http.ParseTime(v); err == nil {
		return max(time.Until(at), time.Millisecond)
	}
	return 0
}

// providerMessage digs the human message out of an error body: OpenAI
// sends {"error":{"message":...}}, Anthropic {"type":"error","error":{"message":...}}.
func providerMessage(body []byte) string {
	var e struct {
		Error json.RawMessage `json:"error"`
		Msg   string          `json:"message"`
	}
	if json.Unmarshal(body, &e) == nil {
		var inner struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(e.Error, &inner) == nil && inner.Message != "" {
			return inner.Message
		}
		var s string
		if json.Unmarshal(e.Error, &s) == nil && s != "" {
			return s
		}
		if e.Msg != "" {
			return e.Msg
		}
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
