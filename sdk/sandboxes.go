package sdk

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultTemplate is the template Create uses when none is given.
const DefaultTemplate = "base"

// CreateOptions configures a new sandbox. The zero value creates a sandbox
// from the "base" template with the server's default timeout (300 s).
type CreateOptions struct {
	// Template is a template ID or name; empty means DefaultTemplate.
	Template string
	// Timeout is how long the sandbox lives before it is killed (or paused
	// with AutoPause); it is sent in whole seconds, rounded up. Zero means
	// the server default.
	Timeout time.Duration
	// Metadata is stored with the sandbox and can filter List.
	Metadata map[string]string
	// EnvVars are set for every process in the sandbox.
	EnvVars map[string]string
	// AllowInternetAccess controls outbound network; nil means allowed.
	AllowInternetAccess *bool
	// AutoPause pauses instead of killing the sandbox at its timeout.
	AutoPause bool
	// AutoPauseDropMemory makes that auto-pause keep only the filesystem
	// (E2B's autoPauseMemory false): resuming boots the sandbox again.
	AutoPauseDropMemory bool
	// AutoResume resumes the paused sandbox when traffic reaches it
	// (E2B's autoResume); not with AutoPauseDropMemory.
	AutoResume bool
	// Network sets the egress policy and public traffic (network.go).
	Network *NetworkOptions
	// VolumeMounts mounts volumes (by name or ID) at paths in the sandbox.
	VolumeMounts map[string]string
}

// Sandbox is a running sandbox: its identity plus the credentials needed to
// reach envd inside it. Get one from Client.Create or Client.Connect.
type Sandbox struct {
	ID              string
	TemplateID      string
	Alias           string
	EnvdVersion     string
	EnvdAccessToken string
	// TrafficAccessToken is what the sandbox's ports require in the
	// e2b-traffic-access-token header when its public traffic is off.
	TrafficAccessToken string
	// Domain is the sandbox domain for host routing (Host): the one the
	// server answered, else Config.Domain ($E2B_DOMAIN). Empty when the
	// server routes by headers only.
	Domain string

	// Commands starts and controls processes in the sandbox.
	Commands *Commands
	// Files reads and writes the sandbox's filesystem.
	Files *Files
	// Pty runs interactive terminals.
	Pty *Pty

	client *Client
}

// sandboxJSON is E2B's Sandbox object, answered by create and connect.
type sandboxJSON struct {
	TemplateID      string `json:"templateID"`
	SandboxID       string `json:"sandboxID"`
	Alias           string `json:"alias,omitempty"`
	ClientID        string `json:"clientID"`
	EnvdVersion     string `json:"envdVersion"`
	EnvdAccessToken string `json:"envdAccessToken,omitempty"`
	Domain          string `json:"domain,omitempty"`
	TrafficToken    string `json:"trafficAccessToken,omitempty"`
}

func (c *Client) newSandbox(j sandboxJSON) (*Sandbox, error) {
	if j.SandboxID == "" {
		return nil, fmt.Errorf("server answered without a sandboxID")
	}
	s := &Sandbox{
		ID:                 j.SandboxID,
		TemplateID:         j.TemplateID,
		Alias:              j.Alias,
		EnvdVersion:        j.EnvdVersion,
		EnvdAccessToken:    j.EnvdAccessToken,
		client:             c,
		TrafficAccessToken: j.TrafficToken,
	}
	s.Commands = &Commands{sbx: s}
	s.Files = &Files{sbx: s}
	s.Pty = &Pty{sbx: s}
	s.Domain = j.Domain
	if s.Domain == "" {
		s.Domain = c.domain
	}
	return s, nil
}

// seconds rounds a duration up to whole seconds, as the E2B SDKs do.
func seconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64(math.Ceil(d.Seconds()))
}

// Create starts a sandbox and returns once it is ready to run commands.
func (c *Client) Create(ctx context.Context, opts CreateOptions) (*Sandbox, error) {
	body := struct {
		TemplateID          string            `json:"templateID"`
		Timeout             int64             `json:"timeout,omitempty"`
		Metadata            map[string]string `json:"metadata,omitempty"`
		EnvVars             map[string]string `json:"envVars,omitempty"`
		AllowInternetAccess *bool             `json:"allow_internet_access,omitempty"`
		AutoPause           bool              `json:"autoPause,omitempty"`
		AutoPauseMemory     *bool             `json:"autoPauseMemory,omitempty"`
		AutoResume          *autoResumeJSON   `json:"autoResume,omitempty"`
		Network             *NetworkOptions   `json:"network,omitempty"`
		VolumeMounts        []volumeMount     `json:"volumeMounts,omitempty"`
	}{
		TemplateID:          opts.Template,
		Timeout:             seconds(opts.Timeout),
		Metadata:            opts.Metadata,
		EnvVars:             opts.EnvVars,
		AllowInternetAccess: opts.AllowInternetAccess,
		AutoPause:           opts.AutoPause,
		Network:             opts.Network,
		VolumeMounts:        volumeMounts(opts.VolumeMounts),
	}
	if body.TemplateID == "" {
		body.TemplateID = DefaultTemplate
	}
	if opts.AutoPauseDropMemory {
		keep := false
		body.AutoPauseMemory = &keep
	}
	if opts.AutoResume {
		body.AutoResume = &autoResumeJSON{Enabled: true}
	}
	var out sandboxJSON
	if _, err := c.apiDo(ctx, http.MethodPost, "/v2/sandboxes", nil, body, &out); err != nil {
		return nil, fmt.Errorf("create sandbox from template %q: %w", body.TemplateID, err)
	}
	return c.newSandbox(out)
}

// ConnectOptions are the options of Connect and Resume (the JS SDK's
// SandboxConnectOpts).
type ConnectOptions struct {
	// Timeout, when positive, extends the sandbox's life to at least now +
	// Timeout; it is never shortened. Zero keeps the sandbox's end time.
	Timeout time.Duration
}

// Connect returns a handle to an existing sandbox, resuming it if it is
// paused.
func (c *Client) Connect(ctx context.Context, id string, opts ConnectOptions) (*Sandbox, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	body := struct {
		Timeout int64 `json:"timeout,omitempty"`
	}{seconds(opts.Timeout)}
	var out sandboxJSON
	if _, err := c.apiDo(ctx, http.MethodPost, "/v2/sandboxes/"+id+"/connect", nil, body, &out); err != nil {
		return nil, fmt.Errorf("connect to sandbox %s: %w", id, err)
	}
	return c.newSandbox(out)
}

// Resume resumes a paused sandbox. It is Connect under another name: the
// current E2B API resumes through connect.
func (c *Client) Resume(ctx context.Context, id string, opts ConnectOptions) (*Sandbox, error) {
	return c.Connect(ctx, id, opts)
}

// SandboxInfo describes a sandbox as Get and List report it.
type SandboxInfo struct {
	SandboxID   string            `json:"sandboxID"`
	TemplateID  string            `json:"templateID"`
	Alias       string            `json:"alias,omitempty"`
	ClientID    string            `json:"clientID,omitempty"`
	StartedAt   time.Time         `json:"startedAt"`
	EndAt       time.Time         `json:"endAt"`
	EnvdVersion string            `json:"envdVersion,omitempty"`
	CPUCount    int               `json:"cpuCount"`
	MemoryMB    int               `json:"memoryMB"`
	DiskSizeMB  int               `json:"diskSizeMB,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	State       string            `json:"state"` // "running" or "paused"
	// PauseTier says where a paused sandbox is kept: "memory" (frozen) or
	// "disk" (checkpointed). Only Get reports it (sbx extension).
	PauseTier string `json:"pauseTier,omitempty"`
	// Only Get reports these.
	EnvdAccessToken     string     `json:"envdAccessToken,omitempty"`
	AllowInternetAccess *bool      `json:"allowInternetAccess,omitempty"`
	Lifecycle           *Lifecycle `json:"lifecycle,omitempty"`
	// Runtime is the OCI runtime the sandbox runs under (crun, runsc, ...;
	// sbx extension).
	Runtime string `json:"runtime,omitempty"`
}

// Lifecycle is what happens to a sandbox at its timeout.
type Lifecycle struct {
	OnTimeout  string `json:"onTimeout"`  // "kill" or "pause"
	AutoResume bool   `json:"autoResume"` // a paused sandbox resumes when its URL is used
}

// TemplateName is the name the sandbox's template was started by (its
// alias), else its ID.
func (i *SandboxInfo) TemplateName() string {
	if i.Alias != "" {
		return i.Alias
	}
	return i.TemplateID
}

// Sandbox states used by SandboxInfo.State and ListOptions.State.
const (
	StateRunning = "running"
	StatePaused  = "paused"
)

// Get describes one sandbox.
func (c *Client) Get(ctx context.Context, id string) (*SandboxInfo, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	var out SandboxInfo
	if _, err := c.apiDo(ctx, http.MethodGet, "/sandboxes/"+id, nil, nil, &out); err != nil {
		return nil, fmt.Errorf("get sandbox %s: %w", id, err)
	}
	return &out, nil
}

// ListOptions filters List.
type ListOptions struct {
	// Metadata keeps sandboxes whose metadata has every one of these pairs.
	Metadata map[string]string
	// State keeps sandboxes in these states (StateRunning, StatePaused);
	// empty means all.
	State []string
	// Limit caps the number of sandboxes returned; 0 means no cap.
	Limit int
	// Ascending lists oldest first (default: newest first).
	Ascending bool
	// StartedAfter and StartedBefore bound the start time (zero: open;
	// StartedBefore is an sbx extension).
	StartedAfter, StartedBefore time.Time
	// Template keeps sandboxes of one template, by ID or name.
	Template string
}

const maxPageSize = 100

// List returns the team's sandboxes, following pagination (X-Next-Token).
func (c *Client) List(ctx context.Context, opts ListOptions) ([]SandboxInfo, error) {
	var all []SandboxInfo
	token := ""
	for {
		page, next, err := c.ListPage(ctx, opts, token)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if opts.Limit > 0 && len(all) >= opts.Limit {
			return all[:opts.Limit], nil
		}
		if next == "" || len(page) == 0 {
			return all, nil
		}
		token = next
	}
}

// ListPage returns one page of sandboxes starting at nextToken ("" for the
// first page) and the token of the next page ("" after the last).
func (c *Client) ListPage(ctx context.Context, opts ListOptions, nextToken string) ([]SandboxInfo, string, error) {
	q := url.Values{}
	if len(opts.Metadata) > 0 {
		q.Set("metadata", encodeMetadataFilter(opts.Metadata))
	}
	if len(opts.State) > 0 {
		q.Set("state", strings.Join(opts.State, ","))
	}
	size := maxPageSize
	if opts.Limit > 0 && opts.Limit < size {
		size = opts.Limit
	}
	q.Set("limit", strconv.Itoa(size))
	if opts.Ascending {
		q.Set("order", "asc")
	}
	if !opts.StartedAfter.IsZero() {
		q.Set("startedAfter", opts.StartedAfter.UTC().Format(time.RFC3339Nano))
	}
	if !opts.StartedBefore.IsZero() {
		q.Set("startedBefore", opts.StartedBefore.UTC().Format(time.RFC3339Nano))
	}
	if opts.Template != "" {
		q.Set("template", opts.Template)
	}
	if nextToken != "" {
		q.Set("nextToken", nextToken)
	}
	var out []SandboxInfo
	h, err := c.apiDo(ctx, http.MethodGet, "/v2/sandboxes", q, nil, &out)
	if err != nil {
		return nil, "", fmt.Errorf("list sandboxes: %w", err)
	}
	return out, h.Get("X-Next-Token"), nil
}

// encodeMetadataFilter encodes pairs the way the E2B SDKs do: each key and
// value URL-encoded, joined as k=v&k2=v2, then sent as one query parameter
// (so the wire form is encoded twice). Keys are sorted for stable URLs.
func encodeMetadataFilter(md map[string]string) string {
	v := url.Values{}
	for k, val := range md {
		v.Set(k, val)
	}
	return v.Encode()
}

// Kill stops a sandbox and deletes it. Killing a sandbox that does not exist
// returns an error for which IsNotFound is true.
func (c *Client) Kill(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	if _, err := c.apiDo(ctx, http.MethodDelete, "/sandboxes/"+id, nil, nil, nil); err != nil {
		return fmt.Errorf("kill sandbox %s: %w", id, err)
	}
	return nil
}

// SetTimeout makes the sandbox end timeout from now (it may shorten its life).
func (c *Client) SetTimeout(ctx context.Context, id string, timeout time.Duration) error {
	if err := checkID(id); err != nil {
		return err
	}
	if timeout < 0 {
		return fmt.Errorf("set timeout of sandbox %s: negative timeout %v", id, timeout)
	}
	body := struct {
		Timeout int64 `json:"timeout"`
	}{seconds(timeout)}
	if _, err := c.apiDo(ctx, http.MethodPost, "/sandboxes/"+id+"/timeout", nil, body, nil); err != nil {
		return fmt.Errorf("set timeout of sandbox %s: %w", id, err)
	}
	return nil
}

// Pause freezes a sandbox; IsConflict(err) is true when it is already paused.
func (c *Client) Pause(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	if _, err := c.apiDo(ctx, http.MethodPost, "/sandboxes/"+id+"/pause", nil, struct{}{}, nil); err != nil {
		return fmt.Errorf("pause sandbox %s: %w", id, err)
	}
	return nil
}

// PauseToDisk pauses a sandbox straight into sbx's disk tier: its
// processes, memory and files are checkpointed to disk and its memory is
// freed (sbx extension; resume is the same Connect). A frozen sandbox moves
// to disk. The server answers a precondition error (412) when its runtime
// cannot checkpoint (only runsc can), and a conflict when it is on disk
// already.
func (c *Client) PauseToDisk(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	q := url.Values{"tier": {"disk"}}
	if _, err := c.apiDo(ctx, http.MethodPost, "/sandboxes/"+id+"/pause", q, struct{}{}, nil); err != nil {
		return fmt.Errorf("pause sandbox %s to disk: %w", id, err)
	}
	return nil
}

// Metric is one resource-usage sample of a sandbox.
type Metric struct {
	Timestamp     time.Time `json:"timestamp"`
	TimestampUnix int64     `json:"timestampUnix"`
	CPUCount      int       `json:"cpuCount"`
	CPUUsedPct    float64   `json:"cpuUsedPct"`
	MemUsed       int64     `json:"memUsed"`
	MemTotal      int64     `json:"memTotal"`
	MemCache      int64     `json:"memCache"`
	DiskUsed      int64     `json:"diskUsed"`
	DiskTotal     int64     `json:"diskTotal"`
}

// Metrics returns the resource-usage samples the server has for a sandbox.
func (c *Client) Metrics(ctx context.Context, id string) ([]Metric, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	var out []Metric
	if _, err := c.apiDo(ctx, http.MethodGet, "/sandboxes/"+id+"/metrics", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("metrics of sandbox %s: %w", id, err)
	}
	return out, nil
}

// Template is a template as GET /templates lists it.
type Template struct {
	TemplateID  string   `json:"templateID"`
	BuildID     string   `json:"buildID,omitempty"`
	Names       []string `json:"names,omitempty"`
	Aliases     []string `json:"aliases,omitempty"`
	CPUCount    int      `json:"cpuCount,omitempty"`
	MemoryMB    int      `json:"memoryMB,omitempty"`
	DiskSizeMB  int      `json:"diskSizeMB,omitempty"`
	Public      bool     `json:"public,omitempty"`
	BuildStatus string   `json:"buildStatus,omitempty"` // "ready" once usable
	EnvdVersion string   `json:"envdVersion,omitempty"`
}

// ListTemplates lists the templates the team can start sandboxes from.
func (c *Client) ListTemplates(ctx context.Context) ([]Template, error) {
	var out []Template
	if _, err := c.apiDo(ctx, http.MethodGet, "/templates", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	return out, nil
}

// checkID rejects IDs that could not be a sandbox ID before they reach a URL
// path; sandbox IDs are lowercase alphanumerics.
func checkID(id string) error {
	if id == "" {
		return fmt.Errorf("empty sandbox ID")
	}
	for _, r := range id {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') {
			return fmt.Errorf("invalid sandbox ID %q: sandbox IDs contain only lowercase letters and digits", id)
		}
	}
	return nil
}

// Kill kills this sandbox.
func (s *Sandbox) Kill(ctx context.Context) error { return s.client.Kill(ctx, s.ID) }

// SetTimeout makes this sandbox end timeout from now.
func (s *Sandbox) SetTimeout(ctx context.Context, timeout time.Duration) error {
	return s.client.SetTimeout(ctx, s.ID, timeout)
}

// Info describes this sandbox.
func (s *Sandbox) Info(ctx context.Context) (*SandboxInfo, error) { return s.client.Get(ctx, s.ID) }

// Metrics returns this sandbox's resource-usage samples.
func (s *Sandbox) Metrics(ctx context.Context) ([]Metric, error) {
	return s.client.Metrics(ctx, s.ID)
}

// Pause freezes this sandbox.
func (s *Sandbox) Pause(ctx context.Context) error { return s.client.Pause(ctx, s.ID) }
