package cluster

import (
	"context"
	"log/slog"
	"net/url"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
)

// AdminTeam is the team an api replica signs the admin's node calls for
// (GET and POST /nodes/{id}, and POST KillTeamPath, at the node). Team
// IDs are UUIDs, so no team has it; a node serves a request signed for it
// on those routes only (internal/api, checkAdminSignatureScope).
const AdminTeam = "sbx-cluster-admin"

// Node statuses of the admin's views (E2B's NodeStatus, and lost).
const (
	StatusReady      = "ready"
	StatusDraining   = "draining"
	StatusConnecting = "connecting" // registered, its API not serving yet
	StatusUnhealthy  = "unhealthy"  // missed heartbeats: placed on no more
	StatusLost       = "lost"       // declared lost: its running sandboxes were recorded killed
)

// NodeView is one node of the registry as the admin sees it.
type NodeView struct {
	store.Node
	Status string
}

// NodeSandboxStore reads the sandboxes of nodes (the shared database) and
// records those of lost nodes killed (KillTeam).
type NodeSandboxStore interface {
	LiveSandboxes(ctx context.Context) ([]store.Sandbox, error)
	NodeSandboxes(ctx context.Context, node string) ([]store.Sandbox, error)
	UpdateSandbox(ctx context.Context, sb store.Sandbox, change *store.Change) error
}

// Admin is what an api replica serves the admin's /nodes views from:
// the node registry, the sandboxes in the database, and signed calls to
// the nodes themselves.
type Admin struct {
	nodes  *Nodes
	st     NodeSandboxStore
	client *Client
	log    *slog.Logger
}

// NewAdmin returns the admin's view of the cluster.
func NewAdmin(nodes *Nodes, st NodeSandboxStore, client *Client, log *slog.Logger) *Admin {
	return &Admin{nodes: nodes, st: st, client: client, log: log}
}

// Nodes reads the registry afresh (admin calls are rare; the answer
// should not be a refresh old) and returns every node with its status.
func (a *Admin) Nodes(ctx context.Context) ([]NodeView, error) {
	if err := a.nodes.Refresh(ctx); err != nil {
		return nil, errdefs.Unavailable("read the cluster's nodes: %v", err)
	}
	now := a.nodes.now()
	rows := *a.nodes.rows.Load()
	out := make([]NodeView, 0, len(rows))
	for _, r := range rows {
		out = append(out, NodeView{Node: r, Status: a.nodes.status(r, now)})
	}
	return out, nil
}

// status is what the admin is told of node r at now.
func (n *Nodes) status(r store.Node, now time.Time) string {
	switch {
	case r.State == store.NodeLost:
		return StatusLost
	case now.Sub(r.HeartbeatAt) > n.stale:
		return StatusUnhealthy
	case !offered(r):
		return StatusConnecting
	case r.State == store.NodeDraining:
		return StatusDraining
	}
	return StatusReady
}

// Node returns node id, or not found.
func (a *Admin) Node(ctx context.Context, id string) (NodeView, error) {
	views, err := a.Nodes(ctx)
	if err != nil {
		return NodeView{}, err
	}
	for _, v := range views {
		if v.ID == id {
			return v, nil
		}
	}
	return NodeView{}, errdefs.NotFound("node %q not found in the cluster's node registry", truncate(id))
}

// SandboxCounts counts the sandboxes not killed per node, from the
// database.
func (a *Admin) SandboxCounts(ctx context.Context) (map[string]int, error) {
	sbs, err := a.st.LiveSandboxes(ctx)
	if err != nil {
		return nil, err
	}
	counts := map[string]int{}
	for _, sb := range sbs {
		if sb.State != store.StateKilled {
			counts[sb.NodeID]++
		}
	}
	return counts, nil
}

// Sandboxes lists the sandboxes not killed that node id runs or holds
// paused, from the database.
func (a *Admin) Sandboxes(ctx context.Context, id string) ([]store.Sandbox, error) {
	sbs, err := a.st.NodeSandboxes(ctx, id)
	if err != nil {
		return nil, err
	}
	out := sbs[:0]
	for _, sb := range sbs {
		if sb.NodeID == id && sb.State != store.StateKilled {
			out = append(out, sb)
		}
	}
	return out, nil
}

// Ask sends an admin call about node id to that node, signed for
// AdminTeam, and decodes its answer into out (when not nil). A node that
// is lost or not serving is errdefs.ErrUnavailable.
func (a *Admin) Ask(ctx context.Context, v NodeView, method string, body, out any) error {
	if v.Status == StatusLost || !offered(v.Node) {
		return errdefs.Unavailable("node %s is %s: it cannot be asked", v.ID, v.Status)
	}
	_, err := a.client.Do(ctx, v.ID, v.AdvertiseURL, AdminTeam, method, "/nodes/"+url.PathEscape(v.ID), body, out)
	return err
}

// WaitState waits (up to timeout) until node id's heartbeat records state
// (store.NodeReady or store.NodeDraining), so that this replica's
// placement follows a drain at once; the other replicas follow at their
// next refresh (RefreshEvery).
func (a *Admin) WaitState(ctx context.Context, id, state string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if err := a.nodes.Refresh(ctx); err == nil {
			for _, r := range *a.nodes.rows.Load() {
				if r.ID == id && r.State == state {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return errdefs.Unavailable("node %s took the status but its heartbeat did not record %s within %s", id, state, timeout)
		case <-t.C:
		}
	}
}
