package sdk

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// APIKey is a team's API key as listed (E2B's TeamAPIKey): never the key
// itself, which only CreateAPIKey returns, once.
type APIKey struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Mask      KeyMask    `json:"mask"`
	CreatedAt time.Time  `json:"createdAt"`
	LastUsed  *time.Time `json:"lastUsed"`
	// TeamID and Current are sbx extensions: the key's team, and whether
	// it is the key this client authenticated with.
	TeamID  string `json:"teamID,omitempty"`
	Current bool   `json:"current,omitempty"`
}

// KeyMask is E2B's IdentifierMaskingDetails.
type KeyMask struct {
	Prefix            string `json:"prefix"`
	ValueLength       int    `json:"valueLength"`
	MaskedValuePrefix string `json:"maskedValuePrefix"`
	MaskedValueSuffix string `json:"maskedValueSuffix"`
}

// String shows a mask as people recognise a key: e2b_12…cdef.
func (m KeyMask) String() string {
	if m.MaskedValuePrefix == "" && m.MaskedValueSuffix == "" {
		return m.Prefix + "…"
	}
	return m.Prefix + m.MaskedValuePrefix + "…" + m.MaskedValueSuffix
}

// CreatedAPIKey is a new key with its value (E2B's CreatedTeamAPIKey).
type CreatedAPIKey struct {
	APIKey
	Key string `json:"key"`
}

// ListAPIKeys lists the team's API keys (GET /api-keys). With an sbx admin
// key and no Config.TeamID it lists every team's.
func (c *Client) ListAPIKeys(ctx context.Context) ([]APIKey, error) {
	var out []APIKey
	_, err := c.apiDo(ctx, http.MethodGet, "/api-keys", nil, nil, &out)
	return out, err
}

// CreateAPIKey creates a key for the team (POST /api-keys).
func (c *Client) CreateAPIKey(ctx context.Context, name string) (*CreatedAPIKey, error) {
	var out CreatedAPIKey
	if _, err := c.apiDo(ctx, http.MethodPost, "/api-keys", nil, map[string]string{"name": name}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RenameAPIKey renames a key (PATCH /api-keys/{apiKeyID}).
func (c *Client) RenameAPIKey(ctx context.Context, id, name string) error {
	_, err := c.apiDo(ctx, http.MethodPatch, "/api-keys/"+url.PathEscape(id), nil, map[string]string{"name": name}, nil)
	return err
}

// DeleteAPIKey revokes a key (DELETE /api-keys/{apiKeyID}); it stops
// working within a second. sbx refuses to delete a team's last key (a
// conflict, IsConflict) unless force is set.
func (c *Client) DeleteAPIKey(ctx context.Context, id string, force bool) error {
	var q url.Values
	if force {
		q = url.Values{"force": {"true"}}
	}
	_, err := c.apiDo(ctx, http.MethodDelete, "/api-keys/"+url.PathEscape(id), q, nil, nil)
	return err
}

// Team is an sbx team (sbx extension).
type Team struct {
	TeamID    string    `json:"teamID"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"createdAt"`
	// MaxSandboxes caps the team's running and paused sandboxes; nil is
	// the server's default (sbx serve --team-max-sandboxes), 0 no cap.
	MaxSandboxes *int `json:"maxSandboxes"`
}

// CreatedTeam is a new team with its first API key, shown once.
type CreatedTeam struct {
	Team
	APIKey string `json:"apiKey"`
}

// ListTeams lists every team (with an sbx admin key) or the caller's own.
func (c *Client) ListTeams(ctx context.Context) ([]Team, error) {
	var out []Team
	_, err := c.apiDo(ctx, http.MethodGet, "/teams", nil, nil, &out)
	return out, err
}

// TeamOptions are the options of CreateTeam and UpdateTeam.
type TeamOptions struct {
	// MaxSandboxes caps the team's running and paused sandboxes: nil
	// keeps the server's default (--team-max-sandboxes), 0 removes the cap.
	MaxSandboxes *int
}

// CreateTeam creates a team (admin key).
func (c *Client) CreateTeam(ctx context.Context, name string, opts TeamOptions) (*CreatedTeam, error) {
	var out CreatedTeam
	body := map[string]any{"name": name}
	if opts.MaxSandboxes != nil {
		body["maxSandboxes"] = *opts.MaxSandboxes
	}
	if _, err := c.apiDo(ctx, http.MethodPost, "/teams", nil, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateTeam changes a team (admin key). Its cap is always set: a nil
// MaxSandboxes returns it to the server's default.
func (c *Client) UpdateTeam(ctx context.Context, teamID string, opts TeamOptions) (*Team, error) {
	var out Team
	body := map[string]any{"maxSandboxes": opts.MaxSandboxes}
	if _, err := c.apiDo(ctx, http.MethodPatch, "/teams/"+url.PathEscape(teamID), nil, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteTeam deletes a team (admin key): its keys stop working and its
// sandboxes are killed.
func (c *Client) DeleteTeam(ctx context.Context, teamID string) error {
	_, err := c.apiDo(ctx, http.MethodDelete, "/teams/"+url.PathEscape(teamID), nil, nil, nil)
	return err
}
