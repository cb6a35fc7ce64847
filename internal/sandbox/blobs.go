package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/agentauth"
	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/blob/layer"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/network"
	"github.com/sbxdev/sbx/internal/store"
)

// Sandboxes paused without memory in the blob store. A pause to the
// filesystem tier publishes the sandbox's own layers (the writable layers
// of its boots, sandbox-layers/<id>/layer-N) and records their digests
// (store.Layers, owner "sandbox"); its lifecycle options go along as a
// blob of their own. Another server sharing the database and the store
// resumes it: it pulls the template build's layers and the sandbox's,
// takes the row over (store.MoveSandbox: only while it is paused and still
// the first node's) and boots it. From then on the row is the new node's:
// the first node's writes of it are refused (store.ErrMoved), and the
// first node drops its copy when it next touches the sandbox.

// lifecycleOwner records the blob of a paused sandbox's lifecycle options.
const lifecycleOwner = "sandbox-lifecycle"

// adoptMu serializes adoptions on this node: two connects of one moved
// sandbox must pull and claim it once.
var adoptMu sync.Mutex

// publishPaused publishes the layers of a sandbox just paused without
// memory (lower is its next boot's stack, topmost first). A failure is
// logged, not returned: the sandbox stays paused here and resumes here;
// only a resume elsewhere is lost, and says so.
func (m *Manager) publishPaused(ctx context.Context, sb store.Sandbox, lower []string) {
	if m.blobs == nil {
		return
	}
	t0 := m.now()
	own := m.layersDir(sb.ID) + string(filepath.Separator)
	var refs []store.LayerRef
	var total int64
	for _, dir := range lower {
		if !strings.HasPrefix(dir, own) {
			break // the template's layers: published with its build
		}
		d, n, err := layer.PublishMemo(ctx, m.blobs.Store, dir)
		if err != nil {
			m.log.WarnContext(ctx, "publish paused sandbox to the blob store; it can resume on this server only",
				"sandbox.id", sb.ID, "err", err)
			_ = m.blobs.Layers.DeleteLayers(context.WithoutCancel(ctx), store.LayerOwnerSandbox, sb.ID)
			return
		}
		refs = append(refs, store.LayerRef{Digest: string(d), Size: n, Path: dir})
		total += n
	}
	now := m.now().UTC()
	// The lifecycle file carries the egress policy: a node that took the
	// sandbox over without it would boot it with open egress, so a failure
	// here keeps the sandbox on this server (fail closed).
	if err := m.publishLifecycle(ctx, sb.ID); err != nil {
		m.log.WarnContext(ctx, "publish paused sandbox's lifecycle to the blob store; it can resume on this server only",
			"sandbox.id", sb.ID, "err", err)
		_ = m.blobs.Layers.DeleteLayers(context.WithoutCancel(ctx), store.LayerOwnerSandbox, sb.ID)
		return
	}
	if err := m.blobs.Layers.SetLayers(ctx, store.LayerOwnerSandbox, sb.ID, refs, now); err != nil {
		m.log.WarnContext(ctx, "record paused sandbox's layers; it can resume on this server only", "sandbox.id", sb.ID, "err", err)
		return
	}
	m.log.InfoContext(ctx, "paused sandbox published to the blob store", "sandbox.id", sb.ID, "layers", len(refs),
		"bytes", total, "elapsed", m.now().Sub(t0).Round(time.Millisecond))
}

// publishLifecycle records the sandbox's lifecycle file (its lifecycle and
// egress policy) in the blob store, or drops the record of an earlier one
// when the sandbox has no file now.
func (m *Manager) publishLifecycle(ctx context.Context, id string) error {
	b, err := os.ReadFile(filepath.Join(m.layersDir(id), lifecycleFile))
	if errors.Is(err, os.ErrNotExist) {
		return m.blobs.Layers.DeleteLayers(ctx, lifecycleOwner, id)
	}
	if err != nil {
		return err
	}
	d, n, err := m.blobs.Store.Put(ctx, bytes.NewReader(b))
	if err != nil {
		return err
	}
	return m.blobs.Layers.SetLayers(ctx, lifecycleOwner, id, []store.LayerRef{{Digest: string(d), Size: n, Path: lifecycleFile}}, m.now().UTC())
}

// forgetPublished drops the records of a killed sandbox's blobs (the blobs
// themselves wait for a garbage collection of the store).
func (m *Manager) forgetPublished(ctx context.Context, id string) {
	if m.blobs == nil {
		return
	}
	for _, kind := range []string{store.LayerOwnerSandbox, lifecycleOwner} {
		if err := m.blobs.Layers.DeleteLayers(ctx, kind, id); err != nil {
			m.log.WarnContext(ctx, "forget published layers of killed sandbox", "sandbox.id", id, "err", err)
		}
	}
}

// movedAway reports whether the row of l's paused sandbox names another
// node now (it was resumed there from the blob store); if so l is dropped
// from this server, which no longer owns it, and its local files removed.
func (m *Manager) movedAway(ctx context.Context, l *live) bool {
	if m.blobs == nil {
		return false
	}
	l.mu.Lock()
	id, paused := l.sb.ID, l.sb.State == store.StatePaused
	l.mu.Unlock()
	if !paused {
		return false
	}
	row, err := m.store.Sandbox(ctx, id)
	if err != nil || row.NodeID == "" || row.NodeID == m.cfg.NodeID {
		return false
	}
	m.dropMoved(l, row.NodeID)
	return true
}

// dropMoved forgets a sandbox another node took over: no row is written
// (it is the other node's), nothing of it runs here (paused without
// memory), its local copy of the filesystem goes.
func (m *Manager) dropMoved(l *live, node string) {
	l.mu.Lock()
	id, team := l.sb.ID, l.sb.TeamID
	if l.timer != nil {
		l.timer.Stop()
	}
	l.mu.Unlock()
	m.mu.Lock()
	if m.live[id] != l {
		m.mu.Unlock()
		return
	}
	delete(m.live, id)
	m.mu.Unlock()
	m.quota.untracked(team)
	m.disk.unschedule(id)
	l.agent.close()
	if err := os.RemoveAll(m.layersDir(id)); err != nil {
		m.log.Warn("remove local copy of a sandbox resumed on another node", "sandbox.id", id, "err", err)
	}
	_ = os.Remove(m.bootIDPath(id))
	m.log.Info("sandbox was resumed on another node; dropped it here", "sandbox.id", id, "node", node)
}

// nodeOnlyMessage says why sandbox id, paused on node, cannot resume on
// this one, and what its owner can do. The asker may be an api replica
// whose node is gone, or a server sharing the database with a live one.
func nodeOnlyMessage(id, node string) string {
	return fmt.Sprintf("sandbox %s is paused on node %q with its memory or with volumes (or its filesystem is not in the blob store), "+
		"which only that node holds: resume it through that node; if the node is gone, connect again once it is back "+
		"(restarted with its data dir), or kill this sandbox and create a new one. Only a sandbox paused with "+
		"{\"memory\": false} and mounting no volumes resumes on any node", id, node)
}

// adopt takes over a sandbox of the team that another node paused to the
// blob store: it pulls its filesystem (and its template build's), claims
// the row and tracks it here, paused without memory, for the caller to
// resume. Nothing is claimed before every blob is here: a missing blob
// fails with the sandbox still the other node's, nothing lost.
func (m *Manager) adopt(ctx context.Context, teamID, id string) (*live, error) {
	adoptMu.Lock()
	defer adoptMu.Unlock()
	if l := m.lookup(id); l != nil {
		return l, nil // adopted by a concurrent connect
	}
	row, err := m.store.Sandbox(ctx, id)
	if err != nil {
		return nil, err
	}
	if row.TeamID != teamID || row.State == store.StateKilled {
		return nil, errdefs.NotFound("sandbox %s not found (it was killed or reached its end of life)", id)
	}
	node := row.NodeID
	if node == m.cfg.NodeID {
		return nil, errdefs.NotFound("sandbox %s not found on this server (it was killed or reached its end of life)", id)
	}
	if row.State != store.StatePaused {
		return nil, errdefs.Unavailable("sandbox %s runs on node %q: connect to it through that server", id, node)
	}
	refs, err := m.blobs.Layers.Layers(ctx, store.LayerOwnerSandbox, id)
	if err != nil {
		return nil, err
	}
	if len(refs) == 0 {
		return nil, errdefs.Precondition("%s", nodeOnlyMessage(id, node))
	}
	tpl, err := m.templates.Resolve(ctx, row.TemplateID+":"+row.BuildID)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrFailedPrecondition, err, "sandbox %s paused on node %q: its template %s (build %s) cannot be loaded here: %s; "+
			"resume it through node %q", id, node, row.TemplateID, row.BuildID, errdefs.Message(err), node)
	}
	// What this node held of the sandbox is stale (the row was not ours).
	dir := m.layersDir(id)
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	fail := func(err error) (*live, error) {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	what := fmt.Sprintf("sandbox %s (paused on node %q)", id, node)
	lower := make([]string, 0, len(refs)+len(tpl.Lower()))
	for i, ref := range refs {
		d, err := blob.ParseDigest(ref.Digest)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", what, err))
		}
		dst := filepath.Join(dir, fmt.Sprintf("layer-%d", len(refs)-i))
		if err := layer.Pull(ctx, m.blobs.Puller.Cache, d, dst, what); err != nil {
			if errors.Is(err, errdefs.ErrFailedPrecondition) {
				err = errdefs.Wrap(errdefs.ErrFailedPrecondition, err, "%s; it stays paused on node %q, which can still resume it", errdefs.Message(err), node)
			}
			return fail(err)
		}
		layer.WriteMemo(dst, d, ref.Size) // a later pause publishes it by its digest
		lower = append(lower, dst)
	}
	// The lifecycle file carries the egress policy (keepEgress): one that
	// is recorded but cannot be read fails the take-over, which would
	// otherwise boot the sandbox with open egress.
	egress, err := m.adoptLifecycle(ctx, id, dir)
	if err != nil {
		return fail(fmt.Errorf("read the lifecycle of paused sandbox %s from the blob store: %w", id, err))
	}
	lower = append(lower, tpl.Lower()...)
	marker, _ := json.Marshal(fsPaused{Lower: lower, Egress: egress})
	if err := replaceFile(filepath.Join(dir, fsPausedFile), marker, 0o600); err != nil {
		return fail(err)
	}
	if err := m.blobs.Layers.MoveSandbox(ctx, id, node, m.cfg.NodeID); err != nil {
		return fail(err)
	}
	if err := m.blobs.Layers.SetLayers(ctx, store.LayerOwnerSandbox, id, refsAt(refs, lower), m.now().UTC()); err != nil {
		m.log.WarnContext(ctx, "record the paths of a taken-over sandbox's layers", "sandbox.id", id, "err", err)
	}
	row.NodeID = m.cfg.NodeID
	l := &live{sb: row, agent: m.dial(id, m.runDir(id), agentauth.Key{}), lifecycle: m.loadLifecycle(id)}
	m.track(l)
	m.log.InfoContext(ctx, "took over a sandbox paused on another node", "sandbox.id", id, "from", node, "layers", len(refs))
	return l, nil
}

// refsAt is refs with this node's paths.
func refsAt(refs []store.LayerRef, paths []string) []store.LayerRef {
	out := make([]store.LayerRef, len(refs))
	for i, r := range refs {
		r.Path = paths[i]
		out[i] = r
	}
	return out
}

// sweepMoved removes, at start-up, this node's local copies of sandboxes
// it paused that another node took over while it was down: their rows
// name that node, so they are not among this node's (known).
func (m *Manager) sweepMoved(ctx context.Context, known map[string]bool) {
	if m.blobs == nil {
		return
	}
	entries, err := os.ReadDir(m.cfg.Data.SandboxLayers())
	if err != nil {
		return
	}
	for _, e := range entries {
		id := e.Name()
		if known[id] || !idPattern.MatchString(id) {
			continue
		}
		row, err := m.store.Sandbox(ctx, id)
		if err != nil || row.NodeID == "" || row.NodeID == m.cfg.NodeID {
			continue
		}
		if err := os.RemoveAll(m.layersDir(id)); err != nil {
			m.log.Warn("remove local copy of a sandbox resumed on another node", "sandbox.id", id, "err", err)
			continue
		}
		_ = os.Remove(m.bootIDPath(id))
		m.log.Info("removed local copy of a sandbox another node took over", "sandbox.id", id, "node", row.NodeID)
	}
}

// adoptLifecycle copies the published lifecycle file of a paused sandbox
// into dir and returns the egress policy it carries (zero when the sandbox
// published none).
func (m *Manager) adoptLifecycle(ctx context.Context, id, dir string) (network.Policy, error) {
	lc, err := m.blobs.Layers.Layers(ctx, lifecycleOwner, id)
	if err != nil {
		return network.Policy{}, err
	}
	if len(lc) == 0 {
		return network.Policy{}, nil
	}
	d, err := blob.ParseDigest(lc[0].Digest)
	if err != nil {
		return network.Policy{}, err
	}
	h, err := m.blobs.Puller.Cache.Get(ctx, d)
	if err != nil {
		return network.Policy{}, err
	}
	defer h.Release()
	f, err := h.Open()
	if err != nil {
		return network.Policy{}, err
	}
	defer f.Close()
	const maxLifecycle = 1 << 20
	b, err := io.ReadAll(io.LimitReader(f, maxLifecycle+1))
	if err != nil {
		return network.Policy{}, err
	}
	var saved savedLifecycle
	if len(b) > maxLifecycle {
		return network.Policy{}, fmt.Errorf("lifecycle file over %d bytes", maxLifecycle)
	}
	if err := json.Unmarshal(b, &saved); err != nil {
		return network.Policy{}, fmt.Errorf("lifecycle file: %w", err)
	}
	if err := replaceFile(filepath.Join(dir, lifecycleFile), b, 0o600); err != nil {
		return network.Policy{}, err
	}
	return saved.Egress, nil
}
