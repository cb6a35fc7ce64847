package api

import (
	"context"
	"encoding/base64"
	"net/http"
	"strconv"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/request"
	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/template"
)

// Snapshots and forks (issue 13). The manager's methods are optional
// capabilities of the Sandboxes it is given (found by type assertion), so
// wrappers and fakes need not implement them; without them these routes
// answer 412.

// The manager takes, lists and deletes snapshots; the table alone lists.
var (
	_ snapshotter    = (*sandbox.Manager)(nil)
	_ snapshotLister = sandbox.SnapshotTable{}
)

type snapshotter interface {
	CreateSnapshot(ctx context.Context, teamID, id, name string) (sandbox.SnapshotInfo, error)
	snapshotLister
}

// snapshotLister lists a team's snapshots (the shared table: any server's).
type snapshotLister interface {
	ListSnapshots(ctx context.Context, teamID, sandboxID, ref string) ([]sandbox.SnapshotInfo, error)
}

// SetSnapshotList makes GET /snapshots read l: an api replica's
// Sandboxes take no snapshots but the table lists every node's.
func (s *Server) SetSnapshotList(l snapshotLister) { s.snapList = l }

// snapshotList is what GET /snapshots reads.
func (s *Server) snapshotList() (snapshotLister, bool) {
	if s.snapList != nil {
		return s.snapList, true
	}
	sn, ok := s.sandboxes.(snapshotter)
	return sn, ok
}

type forker interface {
	Fork(ctx context.Context, teamID, id string, count int, timeout time.Duration) ([]sandbox.ForkResult, bool, error)
}

func (s *Server) lifecycleRoutes() {
	s.mux.HandleFunc("POST /sandboxes/{id}/snapshots", s.createSnapshot)
	s.mux.HandleFunc("GET /snapshots", s.listSnapshots)
	s.mux.HandleFunc("POST /sandboxes/{id}/fork", s.fork)
}

// snapshotJSON is E2B's SnapshotInfo, plus whether processes and memory are
// in it (sbx extension: true for a sandbox under runsc, which can be
// checkpointed; false for a filesystem snapshot).
type snapshotJSON struct {
	SnapshotID string   `json:"snapshotID"`
	Names      []string `json:"names"`
	Memory     bool     `json:"memory"`
	SandboxID  string   `json:"sandboxID,omitempty"` // sbx extension: the source
}

func toSnapshotJSON(i sandbox.SnapshotInfo) snapshotJSON {
	out := snapshotJSON{SnapshotID: i.ID + ":" + template.DefaultTag, Names: []string{}, SandboxID: i.SandboxID, Memory: i.Memory}
	if i.Name != "" {
		out.SnapshotID = i.Name + ":" + template.DefaultTag
		out.Names = []string{out.SnapshotID}
	}
	return out
}

func (s *Server) createSnapshot(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Name string `json:"name"`
	}
	if err := decode(r, &body, request.SmallBody); err != nil {
		s.fail(w, err)
		return
	}
	sn, ok := s.sandboxes.(snapshotter)
	if !ok {
		s.fail(w, errdefs.Precondition("sandbox snapshots are not supported by this server"))
		return
	}
	unlock, err := s.snapCap.admit(r.Context(), team(r).ID, body.Name, sn)
	if err != nil {
		s.fail(w, err)
		return
	}
	info, err := sn.CreateSnapshot(r.Context(), team(r).ID, r.PathValue("id"), body.Name)
	unlock()
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, toSnapshotJSON(info))
}

// listSnapshots is E2B's GET /snapshots: the team's snapshots, newest
// first, limit (1-100, default 100) per page, X-Next-Token on every page
// but the last.
func (s *Server) listSnapshots(w http.ResponseWriter, r *http.Request) {
	sn, ok := s.snapshotList()
	if !ok {
		s.fail(w, errdefs.Precondition("sandbox snapshots are not supported by this server"))
		return
	}
	q := r.URL.Query()
	limit := 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 100 {
			s.fail(w, errdefs.Invalid("limit must be between 1 and 100, got %q", l))
			return
		}
		limit = n
	}
	all, err := sn.ListSnapshots(r.Context(), team(r).ID, q.Get("sandboxID"), q.Get("name"))
	if err != nil {
		s.fail(w, err)
		return
	}
	start := 0
	if tok := q.Get("nextToken"); tok != "" {
		after, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil {
			s.fail(w, errdefs.Invalid("invalid nextToken: pass the X-Next-Token of the previous page"))
			return
		}
		start = len(all)
		for i, sn := range all {
			if sn.ID == string(after) {
				start = i + 1
				break
			}
		}
	}
	page := all[start:]
	if len(page) > limit {
		page = page[:limit]
		w.Header().Set("X-Next-Token", base64.RawURLEncoding.EncodeToString([]byte(page[len(page)-1].ID)))
	}
	out := make([]snapshotJSON, 0, len(page))
	for _, i := range page {
		out = append(out, toSnapshotJSON(i))
	}
	writeJSON(w, http.StatusOK, out)
}

// forkResultJSON is E2B's SandboxForkResult, plus whether the clone got the
// source's memory and processes (sbx extension; false: booted from a copy
// of the source's files).
type forkResultJSON struct {
	Sandbox *sandboxJSON `json:"sandbox,omitempty"`
	Error   *errorJSON   `json:"error,omitempty"`
	Memory  bool         `json:"memory"`
}

type errorJSON struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (s *Server) fork(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Count   *int   `json:"count"`
		Timeout *int64 `json:"timeout"`
	}
	if err := decode(r, &body, request.SmallBody); err != nil {
		s.fail(w, err)
		return
	}
	f, ok := s.sandboxes.(forker)
	if !ok {
		s.fail(w, errdefs.Precondition("forking sandboxes is not supported by this server"))
		return
	}
	count := 1
	if body.Count != nil {
		count = *body.Count
	}
	// The spec's default timeout of a fork is 15 s.
	timeout, err := (timeoutBody{Timeout: body.Timeout}).seconds(15 * time.Second)
	if err != nil {
		s.fail(w, err)
		return
	}
	results, _, err := f.Fork(r.Context(), team(r).ID, r.PathValue("id"), count, timeout)
	if err != nil {
		s.fail(w, err)
		return
	}
	out := make([]forkResultJSON, 0, len(results))
	for _, res := range results {
		if res.Err != nil {
			s.log.WarnContext(r.Context(), "fork clone failed", "sandbox.id", r.PathValue("id"), "err", res.Err)
			out = append(out, forkResultJSON{Error: &errorJSON{Code: errdefs.HTTPStatus(res.Err), Message: errdefs.Message(res.Err)}})
			continue
		}
		traffic, err := s.inheritNetwork(r.Context(), r.PathValue("id"), res.Sandbox.ID)
		if err != nil {
			// Never hand out a clone without its source's policy.
			_ = s.sandboxes.Kill(context.WithoutCancel(r.Context()), res.Sandbox.TeamID, res.Sandbox.ID)
			s.log.WarnContext(r.Context(), "fork clone's network policy failed", "sandbox.id", res.Sandbox.ID, "err", err)
			out = append(out, forkResultJSON{Error: &errorJSON{Code: errdefs.HTTPStatus(err), Message: errdefs.Message(err)}})
			continue
		}
		sb := toSandboxJSON(res.Sandbox)
		sb.Domain = s.domain()
		if traffic != "" {
			sb.TrafficAccessToken = &traffic
		}
		out = append(out, forkResultJSON{Sandbox: &sb, Memory: res.Memory})
	}
	writeJSON(w, http.StatusCreated, out)
}

// autoResumeJSON is E2B's SandboxAutoResumeConfig.
type autoResumeJSON struct {
	Enabled bool `json:"enabled"`
}

// connectMemory connects, booting a paused sandbox again from its
// filesystem when memory is false (E2B's onResume "reboot").
func (s *Server) connectMemory(r *http.Request, id string, timeout time.Duration, memory *bool) (store.Sandbox, bool, error) {
	if memory != nil && !*memory {
		c, ok := s.sandboxes.(interface {
			ConnectMemory(ctx context.Context, teamID, id string, timeout time.Duration, memory bool) (store.Sandbox, bool, error)
		})
		if !ok {
			return store.Sandbox{}, false, errdefs.Precondition("resuming without memory is not supported by this server")
		}
		return c.ConnectMemory(r.Context(), team(r).ID, id, timeout, false)
	}
	return s.sandboxes.Connect(r.Context(), team(r).ID, id, timeout)
}

// pauseBody is E2B's SandboxPauseRequest.
type pauseBody struct {
	Memory *bool `json:"memory"` // false: keep only the filesystem
}

// inheritNetwork gives a fork's clone its source's network settings: the
// same egress policy and, when the source's ports are private, a traffic
// token of its own (returned). Without this a clone of a locked-down
// sandbox would have open egress and public ports.
func (s *Server) inheritNetwork(ctx context.Context, sourceID, cloneID string) (string, error) {
	if s.net == nil {
		return "", nil
	}
	cfg, _, err := s.net.settings(ctx, sourceID)
	if err != nil || cfg == nil {
		return "", err
	}
	policy, netCfg, traffic, _, err := s.net.plan(cfg, nil)
	if err != nil {
		return "", err
	}
	if err := s.net.apply(ctx, cloneID, policy, netCfg, traffic); err != nil {
		return "", err
	}
	return traffic, nil
}
