package sdk

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// autoResumeJSON is E2B's SandboxAutoResumeConfig.
type autoResumeJSON struct {
	Enabled bool `json:"enabled"`
}

// PauseWithoutMemory pauses a sandbox keeping only its filesystem (E2B's
// pause {"memory": false}): its processes end and its memory is freed;
// Connect boots it again from its files (the template's start command runs
// again). IsConflict(err) is true when it is already paused.
func (c *Client) PauseWithoutMemory(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	body := struct {
		Memory bool `json:"memory"`
	}{false}
	if _, err := c.apiDo(ctx, http.MethodPost, "/sandboxes/"+id+"/pause", nil, body, nil); err != nil {
		return fmt.Errorf("pause sandbox %s without memory: %w", id, err)
	}
	return nil
}

// Reboot connects to a paused sandbox by booting it again from its
// filesystem, whatever memory its pause kept (E2B's connect {"memory":
// false}, the JS SDK's onResume "reboot"). A running sandbox is just
// connected to.
func (c *Client) Reboot(ctx context.Context, id string, timeout time.Duration) (*Sandbox, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	body := struct {
		Timeout int64 `json:"timeout,omitempty"`
		Memory  bool  `json:"memory"`
	}{seconds(timeout), false}
	var out sandboxJSON
	if _, err := c.apiDo(ctx, http.MethodPost, "/v2/sandboxes/"+id+"/connect", nil, body, &out); err != nil {
		return nil, fmt.Errorf("reboot sandbox %s: %w", id, err)
	}
	return c.newSandbox(out)
}

// SnapshotInfo is one sandbox snapshot. Create sandboxes from it with
// CreateOptions{Template: ID}.
type SnapshotInfo struct {
	// ID is "<name>:default" for a named snapshot, else "<id>:default".
	ID    string   `json:"snapshotID"`
	Names []string `json:"names"`
	// Memory says whether processes and memory are in it: true for a
	// sandbox under runsc (checkpointed), false for the filesystem only
	// (sandboxes started from it run the template's start command again).
	Memory bool `json:"memory"`
	// SandboxID is the sandbox it was taken from (sbx extension).
	SandboxID string `json:"sandboxID,omitempty"`
}

// CreateSnapshot snapshots a sandbox (running or paused; a running one is
// frozen while its filesystem is copied and then keeps running). A name
// makes it reachable as "<name>:default"; taking another snapshot with
// the same name gives that name the new content.
func (c *Client) CreateSnapshot(ctx context.Context, id, name string) (*SnapshotInfo, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	body := struct {
		Name string `json:"name,omitempty"`
	}{name}
	var out SnapshotInfo
	if _, err := c.apiDo(ctx, http.MethodPost, "/sandboxes/"+id+"/snapshots", nil, body, &out); err != nil {
		return nil, fmt.Errorf("snapshot sandbox %s: %w", id, err)
	}
	return &out, nil
}

// SnapshotListOptions filters ListSnapshots.
type SnapshotListOptions struct {
	SandboxID string // only snapshots of this sandbox
	Name      string // only the snapshot with this name or ID
	Limit     int    // page size (1-100); 0 = the server's (100)
}

// ListSnapshotsPage returns one page of the team's snapshots, newest
// first, and the token of the next page ("" after the last).
func (c *Client) ListSnapshotsPage(ctx context.Context, opts SnapshotListOptions, nextToken string) ([]SnapshotInfo, string, error) {
	q := url.Values{}
	if opts.SandboxID != "" {
		q.Set("sandboxID", opts.SandboxID)
	}
	if opts.Name != "" {
		q.Set("name", opts.Name)
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if nextToken != "" {
		q.Set("nextToken", nextToken)
	}
	var out []SnapshotInfo
	h, err := c.apiDo(ctx, http.MethodGet, "/snapshots", q, nil, &out)
	if err != nil {
		return nil, "", fmt.Errorf("list snapshots: %w", err)
	}
	return out, h.Get("X-Next-Token"), nil
}

// ListSnapshots returns all the team's snapshots (every page).
func (c *Client) ListSnapshots(ctx context.Context, opts SnapshotListOptions) ([]SnapshotInfo, error) {
	var all []SnapshotInfo
	token := ""
	for {
		page, next, err := c.ListSnapshotsPage(ctx, opts, token)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if next == "" || len(page) == 0 {
			return all, nil
		}
		token = next
	}
}

// DeleteSnapshot deletes a snapshot by its ID or name; IsNotFound(err)
// when there is none. Sandboxes started from it keep running.
func (c *Client) DeleteSnapshot(ctx context.Context, snapshotID string) error {
	if snapshotID == "" || strings.ContainsAny(snapshotID, "?#") {
		return fmt.Errorf("invalid snapshot ID %q", snapshotID)
	}
	if _, err := c.apiDo(ctx, http.MethodDelete, "/templates/"+url.PathEscape(snapshotID), nil, nil, nil); err != nil {
		return fmt.Errorf("delete snapshot %s: %w", snapshotID, err)
	}
	return nil
}

// ForkResult is one clone of Fork: a sandbox, or why it did not start.
type ForkResult struct {
	Sandbox *Sandbox
	Err     error
	// Memory says whether the clone got the source's processes and memory
	// (true for a source under runsc); false: it booted from a copy of the
	// source's files.
	Memory bool
}

// Fork clones a running sandbox count times (timeout 0 = the server's
// default, 15 s as in E2B's spec). The source keeps running. Each clone
// succeeds or fails on its own.
func (c *Client) Fork(ctx context.Context, id string, count int, timeout time.Duration) ([]ForkResult, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	body := struct {
		Count   int   `json:"count,omitempty"`
		Timeout int64 `json:"timeout,omitempty"`
	}{count, seconds(timeout)}
	var out []struct {
		Sandbox *sandboxJSON `json:"sandbox"`
		Error   *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
		Memory bool `json:"memory"`
	}
	if _, err := c.apiDo(ctx, http.MethodPost, "/sandboxes/"+id+"/fork", nil, body, &out); err != nil {
		return nil, fmt.Errorf("fork sandbox %s: %w", id, err)
	}
	res := make([]ForkResult, 0, len(out))
	for _, o := range out {
		r := ForkResult{Memory: o.Memory}
		switch {
		case o.Sandbox != nil:
			r.Sandbox, r.Err = c.newSandbox(*o.Sandbox)
		case o.Error != nil:
			r.Err = &APIError{Status: o.Error.Code, Code: o.Error.Code, Message: o.Error.Message}
		default:
			r.Err = fmt.Errorf("fork sandbox %s: the server answered an empty result", id)
		}
		res = append(res, r)
	}
	return res, nil
}
