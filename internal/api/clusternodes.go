package api

import (
	"cmp"
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/cluster"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
)

// The admin's /nodes views on an api replica (sbx serve --role api): every
// node of the cluster's registry (heartbeat rows, or Leases in
// Kubernetes) with its status, load and sandboxes from the database, and
// what the node itself says (version, host metrics, create counts), asked
// with a signed call. A drain goes to the node, signed, and is answered
// once the node's heartbeat records it.

// ClusterNodes is the cluster's node registry as an api replica sees it
// (cluster.Admin).
type ClusterNodes interface {
	Nodes(ctx context.Context) ([]cluster.NodeView, error)
	Node(ctx context.Context, id string) (cluster.NodeView, error)
	SandboxCounts(ctx context.Context) (map[string]int, error)
	Sandboxes(ctx context.Context, id string) ([]store.Sandbox, error)
	Ask(ctx context.Context, v cluster.NodeView, method string, body, out any) error
	WaitState(ctx context.Context, id, state string, timeout time.Duration) error
	// KillTeam kills a team's sandboxes on every node that holds some.
	KillTeam(ctx context.Context, teamID string) (killed, failed int, err error)
}

// SetClusterNodes makes /nodes list the cluster's nodes (an api replica).
func (s *Server) SetClusterNodes(c ClusterNodes) { s.clusterNodes = c }

// askTimeout bounds each node's answer to a /nodes view: a node that does
// not answer is shown from the registry alone.
const askTimeout = 2 * time.Second

// loadJSON is the node's load as its last heartbeat gave it (an sbx
// addition to E2B's Node; CPU in millicores with the node's
// --cpu-overcommit, memory in MiB).
type loadJSON struct {
	CPUMillis         int64      `json:"cpuMillis"`
	ReservedCPUMillis int64      `json:"reservedCpuMillis"`
	MemoryMiB         int64      `json:"memoryMiB"`
	ReservedMemoryMiB int64      `json:"reservedMemoryMiB"`
	HeartbeatAt       time.Time  `json:"heartbeatAt"`
	LostAt            *time.Time `json:"lostAt,omitempty"`
	Address           string     `json:"address,omitempty"`
}

type clusterNodeJSON struct {
	nodeJSON
	Load loadJSON `json:"load"`
}

type clusterNodeDetailJSON struct {
	clusterNodeJSON
	SandboxCount         *struct{}    `json:"sandboxCount,omitempty"`
	SandboxStartingCount *struct{}    `json:"sandboxStartingCount,omitempty"`
	Sandboxes            []detailJSON `json:"sandboxes"`
	CachedBuilds         []string     `json:"cachedBuilds"`
}

// describeClusterNode is node v as the admin sees it: the registry's
// status and load, sandboxes counted in the database, and what the node
// reported (rep, nil when it did not answer).
func describeClusterNode(v cluster.NodeView, sandboxes int, rep *nodeJSON) clusterNodeJSON {
	j := nodeJSON{NodeID: v.ID, ID: v.ID, ServiceInstanceID: v.Boot, ClusterID: localCluster, Status: v.Status,
		SandboxCount: sandboxes, Metrics: nodeMetricsJSON{
			AllocatedCPU: int(v.ReservedCPUMillis / 1000), CPUCount: int(v.CPUMillis / 1000),
			AllocatedMemoryBytes: uint64(max(v.ReservedMemoryMiB, 0)) << 20, MemoryUsedBytes: uint64(max(v.ReservedMemoryMiB, 0)) << 20,
			MemoryTotalBytes: uint64(max(v.MemoryMiB, 0)) << 20, Disks: []diskJSON{}}}
	if rep != nil {
		j.Version, j.Commit, j.Metrics = rep.Version, rep.Commit, rep.Metrics
		j.SandboxStartingCount, j.CreateSuccesses, j.CreateFails = rep.SandboxStartingCount, rep.CreateSuccesses, rep.CreateFails
		if v.Status == cluster.StatusReady && rep.Status == cluster.StatusDraining {
			j.Status = rep.Status // drained since its last heartbeat
		}
	}
	l := loadJSON{CPUMillis: v.CPUMillis, ReservedCPUMillis: v.ReservedCPUMillis, MemoryMiB: v.MemoryMiB,
		ReservedMemoryMiB: v.ReservedMemoryMiB, HeartbeatAt: v.HeartbeatAt, Address: v.AdvertiseURL}
	if !v.LostAt.IsZero() {
		l.LostAt = &v.LostAt
	}
	return clusterNodeJSON{nodeJSON: j, Load: l}
}

// ask gets node v's own description, or nil when it cannot answer.
func (s *Server) ask(ctx context.Context, v cluster.NodeView) *nodeJSON {
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	var rep nodeJSON
	if err := s.clusterNodes.Ask(ctx, v, http.MethodGet, nil, &rep); err != nil {
		if v.Status != cluster.StatusLost {
			s.log.DebugContext(ctx, "node view: the node did not describe itself", "node", v.ID, "err", err)
		}
		return nil
	}
	return &rep
}

func (s *Server) listClusterNodes(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	views, err := s.clusterNodes.Nodes(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	counts, err := s.clusterNodes.SandboxCounts(ctx)
	if err != nil {
		s.fail(w, err)
		return
	}
	out := make([]clusterNodeJSON, len(views))
	var wg sync.WaitGroup
	for i, v := range views {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = describeClusterNode(v, counts[v.ID], s.ask(ctx, v))
		}()
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getClusterNode(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	v, err := s.clusterNodes.Node(ctx, r.PathValue("nodeID"))
	if err != nil {
		s.fail(w, err)
		return
	}
	sbs, err := s.clusterNodes.Sandboxes(ctx, v.ID)
	if err != nil {
		s.fail(w, err)
		return
	}
	d := clusterNodeDetailJSON{clusterNodeJSON: describeClusterNode(v, len(sbs), s.ask(ctx, v)),
		Sandboxes: make([]detailJSON, 0, len(sbs)), CachedBuilds: []string{}}
	for _, sb := range sbs {
		d.Sandboxes = append(d.Sandboxes, toDetail(sb, false))
	}
	for _, b := range strings.Fields(v.Builds) {
		if !strings.HasPrefix(b, store.NodeSnapshotPrefix) { // snapshot copies are not builds
			d.CachedBuilds = append(d.CachedBuilds, b)
		}
	}
	writeJSON(w, http.StatusOK, d)
}

// drainWait bounds how long a status change waits for the node's
// heartbeat to record it (nodes beat every second).
const drainWait = 5 * time.Second

// setClusterNodeStatus sends the status to the node, signed, and answers
// once the node's heartbeat carries it: from then on no api replica
// places on a draining node (this one at once, the others within their
// refresh).
func (s *Server) setClusterNodeStatus(w http.ResponseWriter, r *http.Request, status string) {
	ctx := r.Context()
	v, err := s.clusterNodes.Node(ctx, r.PathValue("nodeID"))
	if err != nil {
		s.fail(w, err)
		return
	}
	body := map[string]string{"status": status}
	if err := s.clusterNodes.Ask(ctx, v, http.MethodPost, body, nil); err != nil {
		s.fail(w, err)
		return
	}
	state := cmp.Or(map[string]string{"draining": store.NodeDraining}[status], store.NodeReady)
	if err := s.clusterNodes.WaitState(ctx, v.ID, state, drainWait); err != nil {
		s.fail(w, err)
		return
	}
	s.log.InfoContext(ctx, "node status set through this api replica", "node.id", v.ID, "status", status, "by", team(r).KeyID)
	w.WriteHeader(http.StatusNoContent)
}

// requireAdmin refuses a team key on the admin's routes.
func requireAdmin(r *http.Request) error {
	if !team(r).Admin {
		return errdefs.Denied("%s %s is for the admin key (sbx admin key)", r.Method, r.URL.Path)
	}
	return nil
}
