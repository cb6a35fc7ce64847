package sdk

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Secret is a team secret's metadata; values are write-only.
type Secret struct {
	ID        string            `json:"secretID"`
	Name      string            `json:"name"`
	Version   int64             `json:"currentVersion"`
	Metadata  map[string]string `json:"metadata"`
	CreatedAt time.Time         `json:"createdAt"`
	UpdatedAt time.Time         `json:"updatedAt"`
}

// SecretPlaceholder is what a sandbox's env var value holds to receive the
// secret name at create (E2B's Secret.fill).
func SecretPlaceholder(name string) string { return "${e2b.secrets." + name + "}" }

// CreateSecret stores a new secret.
func (c *Client) CreateSecret(ctx context.Context, name, value string, metadata map[string]string) (*Secret, error) {
	var out Secret
	body := map[string]any{"name": name, "value": value}
	if metadata != nil {
		body["metadata"] = metadata
	}
	if _, err := c.apiDo(ctx, http.MethodPost, "/secrets", nil, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateSecret stores a new version of a secret (by ID or name); metadata
// replaces the stored one when not nil.
func (c *Client) UpdateSecret(ctx context.Context, ref, value string, metadata map[string]string) (*Secret, error) {
	var out Secret
	body := map[string]any{"value": value}
	if metadata != nil {
		body["metadata"] = metadata
	}
	if _, err := c.apiDo(ctx, http.MethodPost, "/secrets/"+url.PathEscape(ref), nil, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetSecret returns a secret's metadata by ID or name.
func (c *Client) GetSecret(ctx context.Context, ref string) (*Secret, error) {
	var out Secret
	if _, err := c.apiDo(ctx, http.MethodGet, "/secrets/"+url.PathEscape(ref), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListSecrets returns every secret of the team, following pages.
func (c *Client) ListSecrets(ctx context.Context) ([]Secret, error) {
	var all []Secret
	q := url.Values{"limit": {"1000"}}
	for {
		var page []Secret
		h, err := c.apiDo(ctx, http.MethodGet, "/secrets", q, nil, &page)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		next := h.Get("X-Next-Token")
		if next == "" {
			return all, nil
		}
		q.Set("nextToken", next)
	}
}

// DeleteSecret removes a secret by ID or name.
func (c *Client) DeleteSecret(ctx context.Context, ref string) error {
	_, err := c.apiDo(ctx, http.MethodDelete, "/secrets/"+url.PathEscape(ref), nil, nil, nil)
	return err
}
