package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Volume is a team volume: a file system that outlives sandboxes.
type Volume struct {
	ID     string `json:"volumeID"`
	Name   string `json:"name"`
	Token  string `json:"token,omitempty"` // authorizes the content calls
	client *Client
}

type volumeMount struct {
	Name string `json:"name"`
	Path string `json:"path"`
}

func volumeMounts(m map[string]string) []volumeMount {
	var out []volumeMount
	for path, name := range m {
		out = append(out, volumeMount{Name: name, Path: path})
	}
	return out
}

// VolumeEntry is a file, directory or symlink in a volume.
type VolumeEntry struct {
	Name   string    `json:"name"`
	Path   string    `json:"path"`
	Type   string    `json:"type"` // file, directory, symlink, unknown
	Size   int64     `json:"size"`
	Mode   uint32    `json:"mode"`
	UID    uint32    `json:"uid"`
	GID    uint32    `json:"gid"`
	Mtime  time.Time `json:"mtime"`
	Target string    `json:"target,omitempty"`
}

// CreateVolume makes a volume.
func (c *Client) CreateVolume(ctx context.Context, name string) (*Volume, error) {
	var v Volume
	if _, err := c.apiDo(ctx, http.MethodPost, "/volumes", nil, map[string]string{"name": name}, &v); err != nil {
		return nil, err
	}
	v.client = c
	return &v, nil
}

// GetVolume returns a volume (with its token) by ID or name.
func (c *Client) GetVolume(ctx context.Context, ref string) (*Volume, error) {
	var v Volume
	if _, err := c.apiDo(ctx, http.MethodGet, "/volumes/"+url.PathEscape(ref), nil, nil, &v); err != nil {
		return nil, err
	}
	v.client = c
	return &v, nil
}

// ListVolumes returns the team's volumes (without tokens).
func (c *Client) ListVolumes(ctx context.Context) ([]Volume, error) {
	var out []Volume
	_, err := c.apiDo(ctx, http.MethodGet, "/volumes", nil, nil, &out)
	return out, err
}

// DeleteVolume removes a volume and its content.
func (c *Client) DeleteVolume(ctx context.Context, ref string) error {
	_, err := c.apiDo(ctx, http.MethodDelete, "/volumes/"+url.PathEscape(ref), nil, nil, nil)
	return err
}

// content calls /volumecontent/<id>/<what> with the volume's token.
func (v *Volume) content(ctx context.Context, method, what string, q url.Values, body io.Reader) (*http.Response, error) {
	if v.client.apiURL == nil {
		return nil, errNoControlPlane
	}
	u := *v.client.apiURL
	u.Path = strings.TrimRight(u.Path, "/") + "/volumecontent/" + url.PathEscape(v.ID) + "/" + what
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+v.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := v.client.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, fmt.Errorf("volume %s %s %s: %w", v.ID, method, what, apiErrorFrom(resp))
	}
	return resp, nil
}

// ReadFile returns the content of the file at path.
func (v *Volume) ReadFile(ctx context.Context, path string) ([]byte, error) {
	resp, err := v.content(ctx, http.MethodGet, "file", url.Values{"path": {path}}, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// WriteFile writes data to the file at path, creating missing parents.
func (v *Volume) WriteFile(ctx context.Context, path string, data []byte) error {
	resp, err := v.content(ctx, http.MethodPut, "file", url.Values{"path": {path}, "force": {"true"}}, bytes.NewReader(data))
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// List returns the entries under path, depth levels deep (1: direct).
func (v *Volume) List(ctx context.Context, path string, depth int) ([]VolumeEntry, error) {
	q := url.Values{"path": {path}}
	if depth > 0 {
		q.Set("depth", fmt.Sprint(depth))
	}
	resp, err := v.content(ctx, http.MethodGet, "dir", q, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out []VolumeEntry
	return out, json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&out)
}

// Remove removes path (a directory with everything under it).
func (v *Volume) Remove(ctx context.Context, path string) error {
	resp, err := v.content(ctx, http.MethodDelete, "path", url.Values{"path": {path}}, nil)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}
