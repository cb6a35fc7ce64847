package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// apiClient is a small JSON client for the events, webhooks and budget API,
// which the E2B SDKs do not cover; one client serves all their commands.
type apiClient struct {
	base string
	key  string
	http *http.Client
}

// api builds the JSON client from the same flags and environment as
// client, so both reach the same server with the same key.
func (o *clientOptions) api() (*apiClient, error) {
	cfg, err := o.config()
	if err != nil {
		return nil, err
	}
	return &apiClient{base: strings.TrimRight(cfg.APIURL, "/"), key: cfg.APIKey, http: &http.Client{}}, nil
}

// request sends a JSON request and returns the response for the caller to
// read; non-2xx answers become errors carrying the server's message.
func (c *apiClient) request(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-API-Key", c.key)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w (is 'sbx serve' running at %s?)", method, path, err, c.base)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var eb struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(b, &eb) == nil && eb.Message != "" {
			return nil, fmt.Errorf("%s (HTTP %d)", eb.Message, resp.StatusCode)
		}
		return nil, fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return resp, nil
}

func (c *apiClient) do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.request(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}
