package api

import (
	"bufio"
	"cmp"
	"context"
	"net/http"
	"os"
	goruntime "runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/cluster"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/request"
	"github.com/sbxdev/sbx/internal/store"
)

// E2B's admin API for nodes (GET /nodes, GET/POST /nodes/{nodeID}) and
// teams (POST /admin/teams/{teamID}/...), for the admin key. A server is
// one node: itself. Several servers sharing a database each answer for
// themselves (the cluster work gives every node's view).

// node is the manager as a node: its identity, its sandboxes, draining.
type node interface {
	NodeID() string
	Live() []store.Sandbox
	SetDraining(on bool)
	Draining() bool
	KillWithReason(ctx context.Context, id, reason string) error
}

// createCounts counts sandbox creates through this API (Node's
// createSuccesses and createFails).
type createCounts struct{ ok, failed atomic.Uint64 }

type diskJSON struct {
	MountPoint     string `json:"mountPoint"`
	Device         string `json:"device"`
	FilesystemType string `json:"filesystemType"`
	UsedBytes      uint64 `json:"usedBytes"`
	TotalBytes     uint64 `json:"totalBytes"`
}

type nodeMetricsJSON struct {
	AllocatedCPU         int        `json:"allocatedCPU"`
	CPUPercent           int        `json:"cpuPercent"`
	CPUCount             int        `json:"cpuCount"`
	AllocatedMemoryBytes uint64     `json:"allocatedMemoryBytes"`
	MemoryUsedBytes      uint64     `json:"memoryUsedBytes"`
	MemoryTotalBytes     uint64     `json:"memoryTotalBytes"`
	Disks                []diskJSON `json:"disks"`
}

type nodeJSON struct {
	Version              string          `json:"version"`
	Commit               string          `json:"commit"`
	NodeID               string          `json:"nodeID"`
	ID                   string          `json:"id"`
	ServiceInstanceID    string          `json:"serviceInstanceID"`
	ClusterID            string          `json:"clusterID"`
	Status               string          `json:"status"`
	SandboxCount         int             `json:"sandboxCount"`
	SandboxStartingCount int             `json:"sandboxStartingCount"`
	Metrics              nodeMetricsJSON `json:"metrics"`
	CreateSuccesses      uint64          `json:"createSuccesses"`
	CreateFails          uint64          `json:"createFails"`
}

type nodeDetailJSON struct {
	nodeJSON
	SandboxCount         *struct{}    `json:"sandboxCount,omitempty"`
	SandboxStartingCount *struct{}    `json:"sandboxStartingCount,omitempty"`
	Sandboxes            []detailJSON `json:"sandboxes"`
	CachedBuilds         []string     `json:"cachedBuilds"`
}

// localCluster is the cluster ID a single server reports.
const localCluster = "local"

func (s *Server) nodeRoutes() {
	m := s.mux
	m.HandleFunc("GET /nodes", s.listNodes)
	m.HandleFunc("GET /nodes/{nodeID}", s.getNode)
	m.HandleFunc("POST /nodes/{nodeID}", s.setNodeStatus)
	m.HandleFunc("POST /admin/teams/{teamID}/sandboxes/kill", s.adminKillTeam)
	m.HandleFunc("POST /admin/teams/{teamID}/builds/cancel", s.adminCancelBuilds)
	for _, p := range []string{"GET /nodes", "GET /nodes/{nodeID}", "POST /nodes/{nodeID}",
		"POST /admin/teams/{teamID}/sandboxes/kill", "POST /admin/teams/{teamID}/builds/cancel"} {
		s.admin[p] = true
	}
}

// asNode returns the node for an admin request: a team key gets 403.
func (s *Server) asNode(r *http.Request) (node, error) {
	if !team(r).Admin {
		return nil, errdefs.Denied("%s %s is for the admin key (sbx admin key)", r.Method, r.URL.Path)
	}
	n, ok := s.sandboxes.(node)
	if !ok {
		return nil, errdefs.Precondition("this server runs no sandboxes")
	}
	return n, nil
}

func nodeID(n node) string { return cmp.Or(n.NodeID(), "local") }

func (s *Server) describeNode(n node) nodeJSON {
	live := n.Live()
	m := hostMetrics()
	for _, sb := range live {
		if sb.State == store.StateRunning {
			m.AllocatedCPU += sb.CPUCount
			m.AllocatedMemoryBytes += uint64(sb.MemoryMB) << 20
		}
	}
	version, commit := buildVersion()
	status := "ready"
	if n.Draining() {
		status = "draining"
	}
	id := nodeID(n)
	return nodeJSON{Version: version, Commit: commit, NodeID: id, ID: id, ServiceInstanceID: id, ClusterID: localCluster,
		Status: status, SandboxCount: len(live), Metrics: m,
		CreateSuccesses: s.creates.ok.Load(), CreateFails: s.creates.failed.Load()}
}

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) {
	if s.clusterNodes != nil {
		if err := requireAdmin(r); err != nil {
			s.fail(w, err)
			return
		}
		s.listClusterNodes(w, r)
		return
	}
	n, err := s.asNode(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, []nodeJSON{s.describeNode(n)})
}

// thisNode checks that the path names this server.
func (s *Server) thisNode(r *http.Request) (node, error) {
	n, err := s.asNode(r)
	if err != nil {
		return nil, err
	}
	if want := r.PathValue("nodeID"); want != nodeID(n) {
		return nil, errdefs.NotFound("node %q not found: this server is node %q", truncate(want, 64), nodeID(n))
	}
	return n, nil
}

func (s *Server) getNode(w http.ResponseWriter, r *http.Request) {
	if s.clusterNodes != nil {
		if err := requireAdmin(r); err != nil {
			s.fail(w, err)
			return
		}
		s.getClusterNode(w, r)
		return
	}
	n, err := s.thisNode(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	d := nodeDetailJSON{nodeJSON: s.describeNode(n), Sandboxes: []detailJSON{}, CachedBuilds: []string{}}
	for _, sb := range n.Live() {
		d.Sandboxes = append(d.Sandboxes, toDetail(sb, false))
	}
	if s.templates != nil {
		for _, t := range s.templates.List("") {
			if t.BuildID != "" {
				d.CachedBuilds = append(d.CachedBuilds, t.BuildID)
			}
		}
	}
	writeJSON(w, http.StatusOK, d)
}

// setNodeStatus serves POST /nodes/{nodeID} (NodeStatusChange): draining
// refuses new sandboxes, ready takes them again.
func (s *Server) setNodeStatus(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Status    string `json:"status"`
		ClusterID string `json:"clusterID"`
	}
	if err := decode(r, &body, request.SmallBody); err != nil {
		s.fail(w, err)
		return
	}
	if err := requireAdmin(r); err != nil {
		s.fail(w, err)
		return
	}
	if body.ClusterID != "" && body.ClusterID != localCluster {
		s.fail(w, errdefs.NotFound("cluster %q not found: this server's cluster is %q", truncate(body.ClusterID, 64), localCluster))
		return
	}
	switch body.Status {
	case "ready", "draining":
	case "connecting", "unhealthy":
		s.fail(w, errdefs.Invalid("status %s is reported by the node, not set: set ready or draining", body.Status))
		return
	default:
		s.fail(w, errdefs.Invalid("status must be ready or draining, got %q", truncate(body.Status, 32)))
		return
	}
	if s.clusterNodes != nil {
		s.setClusterNodeStatus(w, r, body.Status)
		return
	}
	n, err := s.thisNode(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	n.SetDraining(body.Status == "draining")
	s.log.InfoContext(r.Context(), "node status set", "node.id", nodeID(n), "status", body.Status, "by", team(r).KeyID)
	w.WriteHeader(http.StatusNoContent)
}

// adminTeamID checks the admin key and that the team exists.
func (s *Server) adminTeamID(r *http.Request) (string, error) {
	if err := requireAdmin(r); err != nil {
		return "", err
	}
	id := r.PathValue("teamID")
	if _, err := s.accounts.Team(r.Context(), id); err != nil {
		return "", err
	}
	return id, nil
}

// adminKillTeam serves POST /admin/teams/{teamID}/sandboxes/kill: on an
// api replica across the cluster's nodes (cluster.Admin.KillTeam), else
// this server's sandboxes.
func (s *Server) adminKillTeam(w http.ResponseWriter, r *http.Request) {
	teamID, err := s.adminTeamID(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	var killed, failed int
	if s.clusterNodes != nil {
		if killed, failed, err = s.clusterNodes.KillTeam(r.Context(), teamID); err != nil {
			s.fail(w, err)
			return
		}
	} else {
		n, err := s.asNode(r)
		if err != nil {
			s.fail(w, err)
			return
		}
		killed, failed = s.killLocal(r.Context(), n, teamID)
	}
	s.log.InfoContext(r.Context(), "admin killed a team's sandboxes", "team.id", teamID, "killed", killed, "failed", failed)
	writeJSON(w, http.StatusOK, map[string]int{"killedCount": killed, "failedCount": failed})
}

// killLocal kills the team's sandboxes this server runs.
func (s *Server) killLocal(ctx context.Context, n node, teamID string) (killed, failed int) {
	for _, sb := range n.Live() {
		if sb.TeamID != teamID {
			continue
		}
		if err := n.KillWithReason(ctx, sb.ID, cluster.KillReason); err != nil {
			failed++
			s.log.WarnContext(ctx, "admin kill", "sandbox.id", sb.ID, "err", err)
			continue
		}
		killed++
	}
	return killed, failed
}

// buildCanceller cancels a team's builds (the template service).
type buildCanceller interface {
	CancelTeamBuilds(ctx context.Context, teamID string) (cancelled, failed int, err error)
}

// SetBuildCanceller gives POST /admin/teams/{teamID}/builds/cancel its
// template service.
func (s *Server) SetBuildCanceller(c buildCanceller) { s.builds = c }

// adminCancelBuilds serves POST /admin/teams/{teamID}/builds/cancel.
func (s *Server) adminCancelBuilds(w http.ResponseWriter, r *http.Request) {
	teamID, err := s.adminTeamID(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	if s.builds == nil {
		s.fail(w, errdefs.Precondition("this server builds no templates"))
		return
	}
	cancelled, failed, err := s.builds.CancelTeamBuilds(r.Context(), teamID)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"cancelledCount": cancelled, "failedCount": failed})
}

// hostMetrics reads the host's CPU, memory and data disk. cpuPercent is
// the one-minute load average over the CPU count (capped at 100): a
// reading without sampling twice.
func hostMetrics() nodeMetricsJSON {
	m := nodeMetricsJSON{CPUCount: goruntime.NumCPU(), Disks: []diskJSON{}}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if l, err := strconv.ParseFloat(f[0], 64); err == nil && m.CPUCount > 0 {
				m.CPUPercent = min(100, int(100*l/float64(m.CPUCount)))
			}
		}
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		var avail uint64
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 2 {
				continue
			}
			kb, _ := strconv.ParseUint(fs[1], 10, 64)
			switch fs[0] {
			case "MemTotal:":
				m.MemoryTotalBytes = kb << 10
			case "MemAvailable:":
				avail = kb << 10
			}
		}
		f.Close()
		if m.MemoryTotalBytes >= avail {
			m.MemoryUsedBytes = m.MemoryTotalBytes - avail
		}
	}
	var st unix.Statfs_t
	if unix.Statfs("/", &st) == nil {
		total := st.Blocks * uint64(st.Bsize)
		d := diskJSON{MountPoint: "/", TotalBytes: total, UsedBytes: total - st.Bfree*uint64(st.Bsize)}
		d.Device, d.FilesystemType = rootMount()
		m.Disks = append(m.Disks, d)
	}
	return m
}

// rootMount names the device and filesystem type mounted at / (the last
// mount there wins, as in the mount table).
func rootMount() (device, fsType string) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return "", ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[1] == "/" {
			device, fsType = f[0], f[2]
		}
	}
	return device, fsType
}

// buildVersion is the module version and VCS revision the binary was
// built from.
func buildVersion() (version, commit string) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown", ""
	}
	version = bi.Main.Version
	for _, st := range bi.Settings {
		if st.Key == "vcs.revision" {
			commit = st.Value
		}
	}
	return version, commit
}
