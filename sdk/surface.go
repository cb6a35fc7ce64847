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

// MetricsRange returns a sandbox's resource samples with start <= time <=
// end, oldest first (zero bounds are open). The server keeps a bounded
// history (sbx serve --metrics-retention).
func (c *Client) MetricsRange(ctx context.Context, id string, start, end time.Time) ([]Metric, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	q := url.Values{}
	if !start.IsZero() {
		q.Set("start", strconv.FormatInt(start.Unix(), 10))
	}
	if !end.IsZero() {
		q.Set("end", strconv.FormatInt(end.Unix(), 10))
	}
	var out []Metric
	if _, err := c.apiDo(ctx, http.MethodGet, "/sandboxes/"+id+"/metrics", q, nil, &out); err != nil {
		return nil, fmt.Errorf("metrics of sandbox %s: %w", id, err)
	}
	return out, nil
}

// LatestMetrics returns the newest sample of each of up to 100 sandboxes,
// by ID; sandboxes without one are left out.
func (c *Client) LatestMetrics(ctx context.Context, ids []string) (map[string]Metric, error) {
	for _, id := range ids {
		if err := checkID(id); err != nil {
			return nil, err
		}
	}
	var out struct {
		Sandboxes map[string]Metric `json:"sandboxes"`
	}
	q := url.Values{"sandbox_ids": {strings.Join(ids, ",")}}
	if _, err := c.apiDo(ctx, http.MethodGet, "/sandboxes/metrics", q, nil, &out); err != nil {
		return nil, fmt.Errorf("metrics of sandboxes: %w", err)
	}
	return out.Sandboxes, nil
}

// TeamMetric is one sample of a team's activity.
type TeamMetric struct {
	Timestamp           time.Time `json:"timestamp"`
	TimestampUnix       int64     `json:"timestampUnix"`
	ConcurrentSandboxes int       `json:"concurrentSandboxes"`
	SandboxStartRate    float64   `json:"sandboxStartRate"` // per second
}

func rangeQuery(start, end time.Time) url.Values {
	q := url.Values{}
	if !start.IsZero() {
		q.Set("start", strconv.FormatInt(start.Unix(), 10))
	}
	if !end.IsZero() {
		q.Set("end", strconv.FormatInt(end.Unix(), 10))
	}
	return q
}

// TeamMetrics returns a team's activity samples within [start, end].
func (c *Client) TeamMetrics(ctx context.Context, teamID string, start, end time.Time) ([]TeamMetric, error) {
	var out []TeamMetric
	if _, err := c.apiDo(ctx, http.MethodGet, "/teams/"+url.PathEscape(teamID)+"/metrics", rangeQuery(start, end), nil, &out); err != nil {
		return nil, fmt.Errorf("metrics of team %s: %w", teamID, err)
	}
	return out, nil
}

// MaxTeamMetric is the peak of one team metric in an interval.
type MaxTeamMetric struct {
	Timestamp     time.Time `json:"timestamp"`
	TimestampUnix int64     `json:"timestampUnix"`
	Value         float64   `json:"value"`
}

// TeamMetricMax returns the peak of metric ("concurrent_sandboxes" or
// "sandbox_start_rate") within [start, end].
func (c *Client) TeamMetricMax(ctx context.Context, teamID, metric string, start, end time.Time) (*MaxTeamMetric, error) {
	q := rangeQuery(start, end)
	q.Set("metric", metric)
	var out MaxTeamMetric
	if _, err := c.apiDo(ctx, http.MethodGet, "/teams/"+url.PathEscape(teamID)+"/metrics/max", q, nil, &out); err != nil {
		return nil, fmt.Errorf("peak %s of team %s: %w", metric, teamID, err)
	}
	return &out, nil
}

// LogEntry is one line of a sandbox's or a build's log.
type LogEntry struct {
	Timestamp time.Time         `json:"timestamp"`
	Level     string            `json:"level"` // debug, info, warn, error
	Message   string            `json:"message"`
	Fields    map[string]string `json:"fields,omitempty"` // source (start-command, envd, sbx), stream
	Step      string            `json:"step,omitempty"`   // build logs: the step
}

// LogsOptions select log lines.
type LogsOptions struct {
	// Cursor: lines from this time on (backward: up to it); zero = all.
	Cursor time.Time
	// Limit caps the lines returned (0: the server's default).
	Limit int
	// Backward lists newest first.
	Backward bool
	// Level keeps lines at this level or above ("" = all).
	Level string
	// Search keeps lines containing this text (sandbox logs only).
	Search string
}

func (o LogsOptions) query() url.Values {
	q := url.Values{}
	if !o.Cursor.IsZero() {
		q.Set("cursor", strconv.FormatInt(o.Cursor.UnixMilli(), 10))
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Backward {
		q.Set("direction", "backward")
	}
	if o.Level != "" {
		q.Set("level", o.Level)
	}
	if o.Search != "" {
		q.Set("search", o.Search)
	}
	return q
}

// SandboxLogs returns a sandbox's log: its template's start command output
// and envd's log.
func (c *Client) SandboxLogs(ctx context.Context, id string, opts LogsOptions) ([]LogEntry, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	var out struct {
		Logs []LogEntry `json:"logs"`
	}
	if _, err := c.apiDo(ctx, http.MethodGet, "/v2/sandboxes/"+id+"/logs", opts.query(), nil, &out); err != nil {
		return nil, fmt.Errorf("logs of sandbox %s: %w", id, err)
	}
	return out.Logs, nil
}

// TemplateBuildLogs returns a build's log lines (Search is not used).
func (c *Client) TemplateBuildLogs(ctx context.Context, templateID, buildID string, opts LogsOptions) ([]LogEntry, error) {
	q := opts.query()
	q.Del("search")
	var out struct {
		Logs []LogEntry `json:"logs"`
	}
	path := "/templates/" + url.PathEscape(templateID) + "/builds/" + url.PathEscape(buildID) + "/logs"
	if _, err := c.apiDo(ctx, http.MethodGet, path, q, nil, &out); err != nil {
		return nil, fmt.Errorf("logs of build %s: %w", buildID, err)
	}
	return out.Logs, nil
}

// Refresh keeps a sandbox alive for d from now (at most an hour); unlike
// SetTimeout it never shortens the sandbox's life.
func (c *Client) Refresh(ctx context.Context, id string, d time.Duration) error {
	if err := checkID(id); err != nil {
		return err
	}
	body := struct {
		Duration int64 `json:"duration"`
	}{seconds(d)}
	if _, err := c.apiDo(ctx, http.MethodPost, "/sandboxes/"+id+"/refreshes", nil, body, nil); err != nil {
		return fmt.Errorf("refresh sandbox %s: %w", id, err)
	}
	return nil
}

// SetTemplatePublic publishes a team's template (every team may start
// sandboxes from it) or makes it private again; ref is its ID or name.
func (c *Client) SetTemplatePublic(ctx context.Context, ref string, public bool) error {
	body := struct {
		Public bool `json:"public"`
	}{public}
	if _, err := c.apiDo(ctx, http.MethodPatch, "/v2/templates/"+url.PathEscape(ref), nil, body, nil); err != nil {
		return fmt.Errorf("set template %s public=%t: %w", ref, public, err)
	}
	return nil
}

// DeleteTemplate deletes a team's template by ID or name.
func (c *Client) DeleteTemplate(ctx context.Context, ref string) error {
	if _, err := c.apiDo(ctx, http.MethodDelete, "/templates/"+url.PathEscape(ref), nil, nil, nil); err != nil {
		return fmt.Errorf("delete template %s: %w", ref, err)
	}
	return nil
}

// CreatedAccessToken is a new access token: its value is shown only here.
type CreatedAccessToken struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Token     string    `json:"token"`
	Mask      KeyMask   `json:"mask"`
	CreatedAt time.Time `json:"createdAt"`
}

// CreateAccessToken creates an access token (sk_e2b_…) of the caller's
// team, for clients that send "Authorization: Bearer".
func (c *Client) CreateAccessToken(ctx context.Context, name string) (*CreatedAccessToken, error) {
	var out CreatedAccessToken
	if _, err := c.apiDo(ctx, http.MethodPost, "/access-tokens", nil, map[string]string{"name": name}, &out); err != nil {
		return nil, fmt.Errorf("create access token: %w", err)
	}
	return &out, nil
}

// DeleteAccessToken revokes an access token.
func (c *Client) DeleteAccessToken(ctx context.Context, id string) error {
	if _, err := c.apiDo(ctx, http.MethodDelete, "/access-tokens/"+url.PathEscape(id), nil, nil, nil); err != nil {
		return fmt.Errorf("delete access token %s: %w", id, err)
	}
	return nil
}

// Node is a server as the admin sees it (GET /nodes).
type Node struct {
	ID              string `json:"id"`
	Version         string `json:"version"`
	Commit          string `json:"commit"`
	ClusterID       string `json:"clusterID"`
	Status          string `json:"status"` // ready, draining
	SandboxCount    int    `json:"sandboxCount"`
	CreateSuccesses uint64 `json:"createSuccesses"`
	CreateFails     uint64 `json:"createFails"`
	Metrics         struct {
		AllocatedCPU         int    `json:"allocatedCPU"`
		CPUPercent           int    `json:"cpuPercent"`
		CPUCount             int    `json:"cpuCount"`
		AllocatedMemoryBytes uint64 `json:"allocatedMemoryBytes"`
		MemoryUsedBytes      uint64 `json:"memoryUsedBytes"`
		MemoryTotalBytes     uint64 `json:"memoryTotalBytes"`
	} `json:"metrics"`
}

// Nodes lists the servers (the admin key).
func (c *Client) Nodes(ctx context.Context) ([]Node, error) {
	var out []Node
	if _, err := c.apiDo(ctx, http.MethodGet, "/nodes", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return out, nil
}

// SetNodeStatus drains a node ("draining": it starts no new sandboxes) or
// makes it "ready" again (the admin key).
func (c *Client) SetNodeStatus(ctx context.Context, id, status string) error {
	body := map[string]string{"status": status}
	if _, err := c.apiDo(ctx, http.MethodPost, "/nodes/"+url.PathEscape(id), nil, body, nil); err != nil {
		return fmt.Errorf("set node %s %s: %w", id, status, err)
	}
	return nil
}
