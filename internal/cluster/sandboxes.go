package cluster

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/placement"
	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/template"
)

// SandboxStore is what an api replica reads of sandboxes: the shared
// database, where nodes record theirs.
type SandboxStore interface {
	Sandbox(ctx context.Context, id string) (store.Sandbox, error)
	ListSandboxes(ctx context.Context, f store.ListFilter) ([]store.Sandbox, error)
	LiveSandboxes(ctx context.Context) ([]store.Sandbox, error)
}

// Templates gives a template's size for placement.
type Templates interface {
	Get(ref string) (template.Template, bool)
}

// CreateAttempts is how many nodes a create tries before giving up.
const CreateAttempts = 3

// Default size of a sandbox whose template the api replica does not know
// (a team's built template: nodes hold those).
const (
	defaultCPUMillis = 2000
	defaultMemoryMiB = 512
)

// Sandboxes is api.Sandboxes for an api replica: creates are placed on a
// node and sent there; reads come from the database; every other call
// goes to the node that runs the sandbox.
type Sandboxes struct {
	st     SandboxStore
	nodes  *Nodes
	placer *placement.Placer
	client *Client
	tpl    Templates
	builds *buildCache // nil: team templates placed by capacity only
	snaps  Snapshots   // nil: snapshots placed by capacity only
	log    *slog.Logger
	stats  *Metrics // nil: not counted
}

// SetMetrics makes creates count their placements (and, through the
// client, failed calls to nodes).
func (s *Sandboxes) SetMetrics(m *Metrics) {
	s.stats = m
	s.client.SetMetrics(m)
}

// NewSandboxes returns the api replica's sandboxes.
func NewSandboxes(st SandboxStore, nodes *Nodes, placer *placement.Placer, client *Client, tpl Templates, log *slog.Logger) *Sandboxes {
	return &Sandboxes{st: st, nodes: nodes, placer: placer, client: client, tpl: tpl, log: log}
}

// createBody is the node's POST /sandboxes body (E2B's NewSandbox).
type createBody struct {
	TemplateID          string            `json:"templateID,omitempty"`
	Timeout             *int64            `json:"timeout,omitempty"`
	AutoPause           bool              `json:"autoPause"`
	Secure              bool              `json:"secure"`
	AllowInternetAccess *bool             `json:"allow_internet_access,omitempty"`
	Metadata            map[string]string `json:"metadata,omitempty"`
	EnvVars             map[string]string `json:"envVars,omitempty"`
	AutoPauseMemory     *bool             `json:"autoPauseMemory,omitempty"`
	AutoResume          *struct {
		Enabled bool `json:"enabled"`
	} `json:"autoResume,omitempty"`
	Network      json.RawMessage `json:"network,omitempty"`
	VolumeMounts []VolumeMount   `json:"volumeMounts,omitempty"`
}

// VolumeMount is one of a create's volume mounts (E2B's
// SandboxVolumeMount): Name is the volume's ID, which the node resolves
// in the team's volumes.
type VolumeMount struct {
	Name string `json:"name"`
	Path string `json:"path"`
}

// NodeCreate is what of a create body the node applies itself, as one
// box does: the egress policy and traffic settings (checked by the api
// replica first), the internet flag as the client sent it, and the
// volumes to mount (by ID, all kept on Node).
type NodeCreate struct {
	Network             json.RawMessage // E2B's SandboxNetworkConfig; nil: none
	AllowInternetAccess *bool
	VolumeMounts        []VolumeMount
	// Node, when set, is the only node the sandbox can run on (it holds
	// the volumes); PinnedBy names them for the error when it cannot.
	Node     string
	PinnedBy string
}

// Create places the sandbox on a node (another one when a node is
// unreachable or full) and creates it there.
func (s *Sandboxes) Create(ctx context.Context, req sandbox.CreateRequest) (store.Sandbox, error) {
	if len(req.Mounts) > 0 {
		// Host paths mean nothing on another machine: mounts go as
		// volume IDs in NodeCreate (CreateOnNode).
		return store.Sandbox{}, errdefs.Invalid("host mounts cannot be sent to a node; mount volumes by name")
	}
	internet := req.AllowInternet
	sb, _, err := s.CreateOnNode(ctx, req, NodeCreate{AllowInternetAccess: &internet})
	return sb, err
}

// CreateOnNode is Create with the settings the node applies; it also
// returns the sandbox's traffic access token ("" when its ports are
// public), which the node made.
func (s *Sandboxes) CreateOnNode(ctx context.Context, req sandbox.CreateRequest, nc NodeCreate) (store.Sandbox, string, error) {
	preq, memNode := s.placementOf(ctx, req)
	preq.Node, preq.PinnedBy = nc.Node, nc.PinnedBy
	if len(nc.VolumeMounts) > 0 {
		preq.NoPool = true // a pooled sandbox has no volumes
	}
	if memNode != "" && nc.Node != "" && memNode != nc.Node {
		return store.Sandbox{}, "", errdefs.Precondition("snapshot %s starts only on the node holding its memory image, "+
			"and its volumes are on another node: start it without those volumes", preq.SnapshotID)
	}
	body := createBody{TemplateID: req.Template, AutoPause: req.AutoPause, Secure: req.Secure,
		AllowInternetAccess: nc.AllowInternetAccess, Metadata: req.Metadata, EnvVars: req.EnvVars,
		AutoPauseMemory: req.AutoPauseMemory, Network: nc.Network, VolumeMounts: nc.VolumeMounts}
	if req.Timeout > 0 {
		secs := int64(req.Timeout / time.Second)
		body.Timeout = &secs
	}
	if req.AutoResume {
		body.AutoResume = &struct {
			Enabled bool `json:"enabled"`
		}{true}
	}
	var created struct {
		SandboxID          string  `json:"sandboxID"`
		TrafficAccessToken *string `json:"trafficAccessToken"`
	}
	creating := time.Duration(0) // choosing = all of Run but the creates on nodes
	send := func(ctx context.Context, node string) error {
		at := time.Now()
		defer func() { creating += time.Since(at) }()
		base, err := s.nodes.URL(ctx, node)
		if err != nil {
			return err
		}
		_, err = s.client.Do(ctx, node, base, req.TeamID, http.MethodPost, "/sandboxes", body, &created)
		return err
	}
	start := time.Now()
	var d placement.Decision
	var err error
	if memNode != "" {
		// Straight to its node, which may not have named the snapshot in
		// a heartbeat yet (taken a moment ago).
		if !s.nodes.Ready(memNode) {
			return store.Sandbox{}, "", errdefs.Unavailable("snapshot %s holds its sandbox's processes and memory, which stay on the node "+
				"that took it, and that node is not available: retry when it is back, or take a snapshot of a sandbox that is not "+
				"checkpointed (filesystem only), which starts anywhere", preq.SnapshotID)
		}
		d.NodeID, err = memNode, send(ctx, memNode)
	} else {
		d, err = s.placer.Run(ctx, preq, CreateAttempts, func(ctx context.Context, d placement.Decision) error {
			err := send(ctx, d.NodeID)
			if err != nil && placement.Retryable(err) {
				s.log.WarnContext(ctx, "create failed on a node; trying another", "node", d.NodeID, "err", err)
			}
			return err
		})
	}
	s.stats.placed(err, time.Since(start)-creating)
	if err != nil {
		return store.Sandbox{}, "", err
	}
	sb, err := s.st.Sandbox(ctx, created.SandboxID)
	if err != nil {
		return store.Sandbox{}, "", fmt.Errorf("read sandbox %s created on node %s: %w", created.SandboxID, d.NodeID, err)
	}
	token := ""
	if created.TrafficAccessToken != nil {
		token = *created.TrafficAccessToken
	}
	return sb, token, nil
}

// placementOf sizes a create and says which layers or snapshot its node
// should hold; memNode is the only node a memory snapshot starts on.
func (s *Sandboxes) placementOf(ctx context.Context, req sandbox.CreateRequest) (preq placement.Request, memNode string) {
	tplID := cmp.Or(req.Template, "base")
	// Nodes report pools by template ID, not by the name or alias asked
	// for, and a pooled sandbox is never one without internet access.
	preq = placement.Request{Team: req.TeamID, TemplateID: tplID, NoPool: !req.AllowInternet || len(req.Mounts) > 0,
		CPUMillis: defaultCPUMillis, MemoryMiB: defaultMemoryMiB}
	if t, ok := s.tpl.Get(tplID); ok {
		preq.TemplateID = t.ID
		preq.CPUMillis, preq.MemoryMiB = int64(max(t.CPUCount, 1))*1000, int64(max(t.MemoryMB, 1))
	} else if sn, ok := s.snapshotOf(ctx, req.TeamID, tplID); ok {
		// Prefer a node holding a copy; a memory snapshot starts only on
		// the node holding its checkpoint image.
		preq.SnapshotID, preq.SnapshotInBlobStore, preq.BuildDigest = sn.ID, sn.MemoryNode == "", sn.BuildID
		memNode = sn.MemoryNode
		var t template.Template
		if json.Unmarshal(sn.Template, &t) == nil {
			preq.CPUMillis, preq.MemoryMiB = int64(max(t.CPUCount, 1))*1000, int64(max(t.MemoryMB, 1))
		}
	} else if s.builds != nil {
		if t, ok := s.builds.get(ctx, req.TeamID, tplID); ok {
			preq.TemplateID = t.ID
			preq.CPUMillis, preq.MemoryMiB = int64(max(t.CPUCount, 1))*1000, int64(max(t.MemoryMB, 1))
			preq.BuildDigest = t.BuildID // nodes report the builds they hold (Nodes.Refresh)
		}
	}
	return preq, memNode
}

// Snapshots finds a team's sandbox snapshot by ID or name (the shared
// table, sandbox.SnapshotTable).
type Snapshots interface {
	Find(ctx context.Context, teamID, ref string) (store.Snapshot, bool, error)
}

// SetSnapshots makes creates from a sandbox snapshot sized by it and
// placed preferring nodes that hold a copy of it.
func (s *Sandboxes) SetSnapshots(sn Snapshots) { s.snaps = sn }

func (s *Sandboxes) snapshotOf(ctx context.Context, teamID, ref string) (store.Snapshot, bool) {
	if s.snaps == nil {
		return store.Snapshot{}, false
	}
	sn, ok, err := s.snaps.Find(ctx, teamID, ref)
	if err != nil {
		s.log.WarnContext(ctx, "look up a sandbox snapshot; placing without its affinity", "template.id", ref, "err", err)
	}
	return sn, ok && err == nil
}

// Get reads the sandbox's row.
func (s *Sandboxes) Get(ctx context.Context, teamID, id string) (store.Sandbox, error) {
	sb, err := s.st.Sandbox(ctx, id)
	if err != nil {
		return store.Sandbox{}, err
	}
	if sb.TeamID != teamID {
		return store.Sandbox{}, errdefs.NotFound("sandbox %s not found", id)
	}
	return sb, nil
}

// List reads the team's rows.
func (s *Sandboxes) List(ctx context.Context, f store.ListFilter) ([]store.Sandbox, error) {
	return s.st.ListSandboxes(ctx, f)
}

// owner returns the sandbox (the team's) and where its node is reached.
func (s *Sandboxes) owner(ctx context.Context, teamID, id string) (store.Sandbox, string, error) {
	sb, err := s.Get(ctx, teamID, id)
	if err != nil {
		return sb, "", err
	}
	base, err := s.nodes.URL(ctx, sb.NodeID)
	return sb, base, err
}

// forward sends a call about sandbox id to its node.
func (s *Sandboxes) forward(ctx context.Context, teamID, id, method, path string, body, out any) (int, error) {
	sb, base, err := s.owner(ctx, teamID, id)
	if err != nil {
		if sb.State == store.StateKilled {
			return 0, errdefs.NotFound("sandbox %s not found", id)
		}
		return 0, err
	}
	return s.client.Do(ctx, sb.NodeID, base, teamID, method, path, body, out)
}

// Kill asks the sandbox's node to kill it.
func (s *Sandboxes) Kill(ctx context.Context, teamID, id string) error {
	_, err := s.forward(ctx, teamID, id, http.MethodDelete, "/sandboxes/"+url.PathEscape(id), nil, nil)
	return err
}

type timeoutJSON struct {
	Timeout int64 `json:"timeout"`
}

// SetTimeout asks the sandbox's node to change its timeout.
func (s *Sandboxes) SetTimeout(ctx context.Context, teamID, id string, timeout time.Duration) error {
	_, err := s.forward(ctx, teamID, id, http.MethodPost, "/sandboxes/"+url.PathEscape(id)+"/timeout",
		timeoutJSON{Timeout: int64(timeout / time.Second)}, nil)
	return err
}

// Connect asks the sandbox's node to connect (resuming a paused sandbox
// there); true when it was resumed.
func (s *Sandboxes) Connect(ctx context.Context, teamID, id string, timeout time.Duration) (store.Sandbox, bool, error) {
	var body any = struct{}{}
	if timeout > 0 {
		body = timeoutJSON{Timeout: int64(timeout / time.Second)}
	}
	status, err := s.connect(ctx, teamID, id, body)
	if err != nil {
		return store.Sandbox{}, false, err
	}
	sb, err := s.Get(ctx, teamID, id)
	return sb, status == http.StatusCreated, err
}

// Pause asks the sandbox's node to pause it.
func (s *Sandboxes) Pause(ctx context.Context, teamID, id string) error {
	return s.PauseTo(ctx, teamID, id, "")
}

// PauseTo is Pause to a tier (memory or disk; "" = the node's choice).
func (s *Sandboxes) PauseTo(ctx context.Context, teamID, id, tier string) error {
	path := "/sandboxes/" + url.PathEscape(id) + "/pause"
	if tier != "" {
		path += "?tier=" + url.QueryEscape(tier)
	}
	_, err := s.forward(ctx, teamID, id, http.MethodPost, path, struct{}{}, nil)
	return err
}

// ConnectMemory is Connect with E2B's memory flag (false: boot the paused
// sandbox again from its filesystem).
func (s *Sandboxes) ConnectMemory(ctx context.Context, teamID, id string, timeout time.Duration, memory bool) (store.Sandbox, bool, error) {
	body := struct {
		Timeout *int64 `json:"timeout,omitempty"`
		Memory  bool   `json:"memory"`
	}{Memory: memory}
	if timeout > 0 {
		secs := int64(timeout / time.Second)
		body.Timeout = &secs
	}
	status, err := s.connect(ctx, teamID, id, body)
	if err != nil {
		return store.Sandbox{}, false, err
	}
	sb, err := s.Get(ctx, teamID, id)
	return sb, status == http.StatusCreated, err
}

// PauseMemory is Pause with E2B's memory flag (false: keep only the
// filesystem).
func (s *Sandboxes) PauseMemory(ctx context.Context, teamID, id string, keepMemory bool) error {
	body := struct {
		Memory bool `json:"memory"`
	}{keepMemory}
	_, err := s.forward(ctx, teamID, id, http.MethodPost, "/sandboxes/"+url.PathEscape(id)+"/pause", body, nil)
	return err
}

// connect sends a connect to the sandbox's node. When that node is gone
// (declared lost, silent, or not answering) and the sandbox is paused,
// another node is placed and asked instead: it resumes the sandbox from
// the blob store and takes its row over (sandbox.Manager.adopt; a
// sandbox paused with its memory stays on its node and the other node
// says so). A running sandbox of a dead node is the node-lost sweep's.
func (s *Sandboxes) connect(ctx context.Context, teamID, id string, body any) (int, error) {
	sb, err := s.Get(ctx, teamID, id)
	if err != nil {
		return 0, err
	}
	if sb.State == store.StateKilled {
		return 0, errdefs.NotFound("sandbox %s not found (it was killed: %s)", id, cmp.Or(sb.KillReason, "unknown"))
	}
	path := "/sandboxes/" + url.PathEscape(id) + "/connect"
	if sb.State != store.StatePaused || s.nodes.Ready(sb.NodeID) {
		base, err := s.nodes.URL(ctx, sb.NodeID)
		if err != nil {
			return 0, err
		}
		status, err := s.client.Do(ctx, sb.NodeID, base, teamID, http.MethodPost, path, body, nil)
		if sb.State != store.StatePaused || !errors.Is(err, errdefs.ErrUnavailable) {
			return status, err
		}
		s.log.WarnContext(ctx, "the node of a paused sandbox is unavailable; resuming it on another node",
			"sandbox.id", id, "node", sb.NodeID, "err", err)
	}
	preq := placement.Request{Team: teamID, TemplateID: sb.TemplateID, SnapshotID: id, SnapshotInBlobStore: true,
		CPUMillis: int64(max(sb.CPUCount, 1)) * 1000, MemoryMiB: int64(max(sb.MemoryMB, 1)), Exclude: []string{sb.NodeID}}
	var status int
	_, err = s.placer.Run(ctx, preq, CreateAttempts, func(ctx context.Context, d placement.Decision) error {
		base, err := s.nodes.URL(ctx, d.NodeID)
		if err != nil {
			return err
		}
		status, err = s.client.Do(ctx, d.NodeID, base, teamID, http.MethodPost, path, body, nil)
		return err
	})
	return status, err
}
