package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/blob/layer"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/keylock"
	"github.com/sbxdev/sbx/internal/periodic"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/template"
)

// Sandbox snapshots across servers. The table (store.Snapshots) says which
// snapshots exist, with their names, teams and own layers' digests; every
// server lists, names and deletes through it. Taking a filesystem snapshot
// publishes its own layers (the captured writable layer and the copies of
// the sandbox's earlier layers) to the blob store as builds' layers are,
// before the row is written. A node asked to start a snapshot it holds no
// current copy of pulls those layers into sandbox-snapshots/<id>/ (and
// the build beneath them through the template service) and registers it
// as the node that took it did; a copy whose row is gone or names newer
// content is dropped when next used or at start-up.
//
// A memory snapshot (runsc checkpoint, memsnap.go) stays on the node that
// took it (its row names that node): its files written since the sandbox
// booted live in the checkpoint image, not in a layer, so booting its
// layers elsewhere would start a sandbox silently missing them. Starting
// it on another node is refused naming the node; api replicas place it
// there.

// ownLayerName is how a snapshot names its own layers (layer-0: the
// captured writable layer; base-N: copies of earlier ones).
var ownLayerName = regexp.MustCompile(`^(?:layer|base)-[0-9]{1,4}$`)

// snapshotPulls makes one pull of a snapshot on this node however many
// creates ask for it at once; the others find the copy in place. By
// snapshot: a team's pull of a big one must not hold up other teams'.
var snapshotPulls keylock.Locks

func infoOf(r store.Snapshot) SnapshotInfo {
	return SnapshotInfo{ID: r.ID, Name: r.Name, TeamID: r.TeamID, SandboxID: r.SandboxID, BuildID: r.BuildID,
		CreatedAt: r.CreatedAt, Memory: r.MemoryNode != ""}
}

// SnapshotTable lists and deletes snapshots through the table alone: an
// api replica, which holds no copies, serves GET /snapshots and deletes
// through it.
type SnapshotTable struct{ Store store.Snapshots }

// snapshotRef is the snapshot part of a reference ("ns/name:default").
func snapshotRef(ref string) (name, tag string) {
	name, tag = template.SplitRef(ref)
	if i := strings.LastIndex(name, "/"); i >= 0 {
		name = name[i+1:]
	}
	return strings.ToLower(name), tag
}

// Find returns the team's snapshot with ID or name ref; ok false when the
// team has none (another team's is not revealed).
func (t SnapshotTable) Find(ctx context.Context, teamID, ref string) (store.Snapshot, bool, error) {
	name, _ := snapshotRef(ref)
	if name == "" || teamID == "" {
		return store.Snapshot{}, false, nil
	}
	for _, get := range []func(context.Context, string) (store.Snapshot, error){t.Store.Snapshot, t.Store.SnapshotByName} {
		r, err := get(ctx, name)
		if err == nil && r.TeamID == teamID {
			return r, true, nil
		}
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return store.Snapshot{}, false, err
		}
	}
	return store.Snapshot{}, false, nil
}

// ListSnapshots lists a team's snapshots, newest first, optionally only
// those of one sandbox or of one name/ID ("name", "name:default").
func (t SnapshotTable) ListSnapshots(ctx context.Context, teamID, sandboxID, ref string) ([]SnapshotInfo, error) {
	if teamID == "" {
		return nil, nil
	}
	ref, _ = snapshotRef(ref)
	rows, err := t.Store.ListSnapshots(ctx, teamID)
	if err != nil {
		return nil, err
	}
	out := []SnapshotInfo{}
	for _, r := range rows {
		if sandboxID != "" && r.SandboxID != sandboxID || ref != "" && r.ID != ref && r.Name != ref {
			continue
		}
		out = append(out, infoOf(r))
	}
	return out, nil
}

// DeleteSnapshot deletes a team's snapshot by ID or name (with or without
// its tag) from the table. handled is false when ref names none of the
// team's snapshots, so the caller can go on with templates. Nodes holding
// copies drop them when next asked for it.
func (t SnapshotTable) DeleteSnapshot(ctx context.Context, teamID, ref string) (handled bool, err error) {
	if _, tag := snapshotRef(ref); tag != "" && tag != template.DefaultTag {
		return false, nil
	}
	r, ok, err := t.Find(ctx, teamID, ref)
	if err != nil || !ok {
		return false, err
	}
	if err := t.Store.DeleteSnapshot(ctx, teamID, r.ID); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return true, err
	}
	return true, nil
}

// DeleteTeam deletes a deleted team's snapshots from the table.
func (t SnapshotTable) DeleteTeam(ctx context.Context, teamID string) error {
	rows, err := t.Store.ListSnapshots(ctx, teamID)
	if err != nil || teamID == "" {
		return err
	}
	for _, r := range rows {
		if err := t.Store.DeleteSnapshot(ctx, teamID, r.ID); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return err
		}
	}
	return nil
}

func (m *Manager) snapshotTable() (SnapshotTable, bool) {
	m.snaps.mu.Lock()
	defer m.snaps.mu.Unlock()
	return SnapshotTable{m.snaps.st}, m.snaps.st != nil
}

// ListSnapshots lists a team's snapshots from the table (every server's).
func (m *Manager) ListSnapshots(ctx context.Context, teamID, sandboxID, ref string) ([]SnapshotInfo, error) {
	t, ok := m.snapshotTable()
	if !ok {
		return []SnapshotInfo{}, nil
	}
	return t.ListSnapshots(ctx, teamID, sandboxID, ref)
}

// DeleteSnapshot deletes a team's snapshot from the table and this node's
// copy of it.
func (m *Manager) DeleteSnapshot(ctx context.Context, teamID, ref string) (handled bool, err error) {
	t, ok := m.snapshotTable()
	if !ok {
		return false, nil
	}
	r, found, err := t.Find(ctx, teamID, ref)
	if err != nil || !found {
		return false, err
	}
	if _, err := t.DeleteSnapshot(ctx, teamID, r.ID); err != nil {
		return true, err
	}
	if err := m.dropSnapshotCopy(r.ID); err != nil {
		return true, fmt.Errorf("delete snapshot %s: %w", r.ID, err)
	}
	m.log.InfoContext(ctx, "sandbox snapshot deleted", "snapshot.id", r.ID, "team.id", teamID)
	return true, nil
}

// dropSnapshotCopy forgets this node's copy of a snapshot (sandboxes
// started from it hold their own links to its layers).
func (m *Manager) dropSnapshotCopy(id string) error {
	m.snaps.mu.Lock()
	defer m.snaps.mu.Unlock()
	delete(m.snaps.byID, id)
	if m.snaps.reg != nil {
		m.snaps.reg.Remove(id)
	}
	return os.RemoveAll(filepath.Join(m.sandboxSnapshotsDir(), id))
}

// dropSnapshotCopyAt is dropSnapshotCopy unless the copy is no longer
// the one of time at (new content taken here since the caller looked).
func (m *Manager) dropSnapshotCopyAt(id string, at time.Time) (bool, error) {
	m.snaps.mu.Lock()
	defer m.snaps.mu.Unlock()
	s := m.snaps.byID[id]
	if s == nil || !s.CreatedAt.Truncate(time.Millisecond).Equal(at) {
		return false, nil
	}
	delete(m.snaps.byID, id)
	if m.snaps.reg != nil {
		m.snaps.reg.Remove(id)
	}
	return true, os.RemoveAll(filepath.Join(m.sandboxSnapshotsDir(), id))
}

// SnapshotBuilds lists the template builds under every snapshot's layers
// (any server's), which template pruning must keep.
func (m *Manager) SnapshotBuilds(ctx context.Context) ([]string, error) {
	t, ok := m.snapshotTable()
	if !ok {
		return nil, nil
	}
	rows, err := t.Store.ListSnapshots(ctx, "")
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rows))
	for _, r := range rows {
		out = append(out, r.BuildID)
	}
	return out, nil
}

// HeldSnapshots names the snapshots this node holds a copy of, newest
// first, at most max (its heartbeat: placement prefers it for them).
func (m *Manager) HeldSnapshots(max int) []string {
	m.snaps.mu.Lock()
	held := make([]*snapshotMeta, 0, len(m.snaps.byID))
	for _, s := range m.snaps.byID {
		held = append(held, s)
	}
	m.snaps.mu.Unlock()
	sort.Slice(held, func(i, j int) bool { return held[i].CreatedAt.After(held[j].CreatedAt) })
	out := make([]string, 0, min(len(held), max))
	for _, s := range held[:min(len(held), max)] {
		out = append(out, s.ID)
	}
	return out
}

// SnapshotSweepEvery is how often a node drops its copies of snapshots
// deleted (or taken again) through another server.
const SnapshotSweepEvery = time.Minute

// SweepSnapshotCopies drops, every SnapshotSweepEvery until ctx ends, the
// copies this node holds of snapshots whose row is gone or names newer
// content: their disk space, and their names in the heartbeat. A create
// from one finds it out at once anyway (syncSnapshot).
func (m *Manager) SweepSnapshotCopies(ctx context.Context) error {
	periodic.Run(ctx, SnapshotSweepEvery, m.sweepSnapshotCopies, m.log, "check snapshot copies against the table")
	return nil
}

func (m *Manager) sweepSnapshotCopies(ctx context.Context) error {
	tab, ok := m.snapshotTable()
	if !ok {
		return nil
	}
	// Copies listed before the rows are read: one taken meanwhile has its
	// row already (it is written before the copy is registered).
	m.snaps.mu.Lock()
	held := make(map[string]time.Time, len(m.snaps.byID))
	for id, s := range m.snaps.byID {
		if s.Recorded {
			held[id] = s.CreatedAt.Truncate(time.Millisecond)
		}
	}
	m.snaps.mu.Unlock()
	if len(held) == 0 {
		return nil
	}
	rows, err := tab.Store.ListSnapshots(ctx, "")
	if err != nil {
		return err
	}
	current := make(map[string]time.Time, len(rows))
	for _, r := range rows {
		current[r.ID] = r.CreatedAt
	}
	for id, at := range held {
		if cur, ok := current[id]; ok && !cur.After(at) {
			continue
		}
		if dropped, err := m.dropSnapshotCopyAt(id, at); err != nil || !dropped {
			if err != nil {
				return err
			}
			continue // taken again here meanwhile
		}
		m.log.InfoContext(ctx, "dropped the copy of a snapshot deleted or taken again through another server", "snapshot.id", id)
	}
	return nil
}

// snapshotIDFor is the ID a snapshot named name gets: the team's
// snapshot of that name keeps its ID (new content), else a new one. A
// name another team's snapshot or a template holds is a conflict.
func (m *Manager) snapshotIDFor(ctx context.Context, reg SnapshotRegistry, teamID, name string) (string, error) {
	if name != "" {
		r, err := m.snaps.st.SnapshotByName(ctx, name)
		switch {
		case err == nil && r.TeamID == teamID:
			return r.ID, nil
		case err == nil:
			return "", errdefs.Conflict("the name %q is taken by another snapshot; choose another snapshot name", name)
		case !errors.Is(err, errdefs.ErrNotFound):
			return "", err
		}
		if t, ok := reg.Get(name); ok {
			if !m.holdsSnapshot(t.ID) {
				return "", errdefs.Conflict("the name %q is taken by a template; choose another snapshot name", name)
			}
			// A copy of a snapshot deleted through another server.
			if err := m.dropSnapshotCopy(t.ID); err != nil {
				return "", err
			}
		}
	}
	return newID()
}

func (m *Manager) holdsSnapshot(id string) bool {
	m.snaps.mu.Lock()
	defer m.snaps.mu.Unlock()
	_, ok := m.snaps.byID[id]
	return ok
}

// baseTemplateOf is the template whose build is under a sandbox's own
// layers: its template's, or for a sandbox started from a snapshot, that
// snapshot's base.
func (m *Manager) baseTemplateOf(ctx context.Context, sb store.Sandbox) string {
	if r, err := m.snaps.st.Snapshot(ctx, sb.TemplateID); err == nil {
		return r.BaseTemplate
	}
	return sb.TemplateID
}

// snapshotRow is the table row of a snapshot in dir (to be renamed to
// final): a filesystem snapshot's own layers are published to the blob
// store first; a memory snapshot's stay here, and the row names this node.
func (m *Manager) snapshotRow(ctx context.Context, meta *snapshotMeta, base, dir, final string) (store.Snapshot, error) {
	tpl := meta.Template
	tpl.Layers = nil // this node's paths; a node pulling it has its own
	raw, err := json.Marshal(tpl)
	if err != nil {
		return store.Snapshot{}, err
	}
	row := store.Snapshot{ID: meta.ID, TeamID: meta.TeamID, Name: meta.Name, SandboxID: meta.SandboxID,
		BaseTemplate: base, BuildID: meta.BuildID, Template: raw, CreatedAt: meta.CreatedAt}
	if meta.Memory {
		row.MemoryNode = m.cfg.NodeID
		row.SizeBytes = dirSize(filepath.Join(dir, "state")) // the checkpoint image
	}
	t0 := m.now()
	for _, l := range meta.Template.Layers {
		if !strings.HasPrefix(l, final+string(filepath.Separator)) {
			break // the build's layers, published with it
		}
		ref := store.LayerRef{Path: l}
		src := filepath.Join(dir, strings.TrimPrefix(l, final+string(filepath.Separator)))
		if m.blobs != nil && !meta.Memory {
			d, n, err := layer.PublishMemo(ctx, m.blobs.Store, src)
			if err != nil {
				return store.Snapshot{}, fmt.Errorf("publish its layers to the blob store: %w", err)
			}
			ref.Digest, ref.Size = string(d), n
		} else {
			ref.Size = dirSize(src)
		}
		row.Layers = append(row.Layers, ref)
		row.SizeBytes += ref.Size
	}
	if m.blobs != nil && !meta.Memory {
		m.log.InfoContext(ctx, "snapshot layers published to the blob store", "snapshot.id", meta.ID,
			"layers", len(row.Layers), "bytes", row.SizeBytes, "elapsed", m.now().Sub(t0).Round(time.Millisecond))
	}
	return row, nil
}

// reconcileSnapshot checks a copy found on disk at start-up against the
// table: keep is false for a copy whose row is gone (deleted through
// another server) or names newer content. A copy from before the table is
// recorded in it (and published) now.
func (m *Manager) reconcileSnapshot(ctx context.Context, meta *snapshotMeta, dir string) (keep bool, _ error) {
	r, err := m.snaps.st.Snapshot(ctx, meta.ID)
	switch {
	case err == nil:
		if !r.CreatedAt.Equal(meta.CreatedAt.Truncate(time.Millisecond)) {
			m.log.Info("dropping an outdated copy of a sandbox snapshot", "snapshot.id", meta.ID)
			return false, nil
		}
		return true, nil
	case !errors.Is(err, errdefs.ErrNotFound):
		return false, fmt.Errorf("load sandbox snapshot %s: %w", meta.ID, err)
	case meta.Recorded:
		m.log.Info("dropping the copy of a sandbox snapshot deleted through another server", "snapshot.id", meta.ID)
		return false, nil
	}
	base := ""
	if sb, err := m.store.Sandbox(ctx, meta.SandboxID); err == nil {
		base = m.baseTemplateOf(ctx, sb)
	}
	meta.CreatedAt = meta.CreatedAt.Truncate(time.Millisecond)
	row, err := m.snapshotRow(ctx, meta, base, dir, dir)
	if err == nil {
		err = m.snaps.st.PutSnapshot(ctx, row)
	}
	if err != nil {
		m.log.Warn("recording a sandbox snapshot from before the shared table failed; it stays on this server only",
			"snapshot.id", meta.ID, "err", err)
		return true, nil
	}
	meta.Recorded = true
	if b, err := json.Marshal(meta); err == nil {
		_ = replaceFile(filepath.Join(dir, "meta.json"), b, 0o600)
	}
	m.log.Info("sandbox snapshot recorded in the shared table", "snapshot.id", meta.ID, "layers", len(row.Layers))
	return true, nil
}

// syncSnapshot makes this node's copy of the team's snapshot ref current
// before a create from it: a copy of a deleted snapshot is dropped, a
// missing or outdated one pulled. References to templates cost nothing
// (the registry knows them as such); only a reference the registry does
// not know, or a snapshot it holds, reads the table.
func (m *Manager) syncSnapshot(ctx context.Context, teamID, ref string) error {
	t, ok := m.snapshotTable()
	if !ok || ref == "" {
		return nil
	}
	name, _ := snapshotRef(ref)
	m.snaps.mu.Lock()
	var local *snapshotMeta
	known := false
	if m.snaps.reg != nil {
		var tpl template.Template
		if tpl, known = m.snaps.reg.Get(name); known {
			local = m.snaps.byID[tpl.ID]
		}
	}
	m.snaps.mu.Unlock()
	if known && local == nil {
		return nil // a template
	}
	r, found, err := t.Find(ctx, teamID, ref)
	if err != nil {
		return err
	}
	if !found {
		if local != nil && local.TeamID == teamID { // deleted through another server
			return m.dropSnapshotCopy(local.ID)
		}
		return nil
	}
	if local != nil && local.ID == r.ID && local.CreatedAt.Truncate(time.Millisecond).Equal(r.CreatedAt) {
		return nil
	}
	if r.MemoryNode != "" && r.MemoryNode != m.cfg.NodeID {
		return errdefs.Precondition("snapshot %s holds its sandbox's processes and memory, whose checkpoint image stays on node %q: "+
			"start it through an api replica (which places it there) or on that server", r.ID, r.MemoryNode)
	}
	return m.pullSnapshot(ctx, r)
}

// pullSnapshot makes this node a copy of a snapshot another node took:
// its own layers from the blob store, its build's through the template
// service; nothing is registered before every layer is here.
func (m *Manager) pullSnapshot(ctx context.Context, r store.Snapshot) error {
	unlock := snapshotPulls.Lock(r.ID)
	defer unlock()
	m.snaps.mu.Lock()
	local := m.snaps.byID[r.ID]
	m.snaps.mu.Unlock()
	if local != nil && local.CreatedAt.Truncate(time.Millisecond).Equal(r.CreatedAt) {
		return nil // pulled by a concurrent create
	}
	what := fmt.Sprintf("snapshot %s", r.ID)
	if m.blobs == nil {
		return errdefs.Precondition("%s was taken on another server and this one has no blob store (sbx serve --blob-store)", what)
	}
	t0 := m.now()
	var tpl template.Template
	if err := json.Unmarshal(r.Template, &tpl); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	base, err := m.templates.Resolve(ctx, r.BaseTemplate+":"+r.BuildID)
	if err != nil {
		return errdefs.Wrap(errdefs.ErrFailedPrecondition, err, "%s: its template %s (build %s) cannot be loaded here: %s",
			what, r.BaseTemplate, r.BuildID, errdefs.Message(err))
	}
	tmp, err := os.MkdirTemp(m.mkSnapshotsDir(), ".pull-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // after the rename: nothing
	final := filepath.Join(m.sandboxSnapshotsDir(), r.ID)
	var lower []string
	for _, ref := range r.Layers {
		name := filepath.Base(ref.Path)
		d, err := blob.ParseDigest(ref.Digest)
		if err != nil || !ownLayerName.MatchString(name) {
			return errdefs.Precondition("%s: its layer %q was not published to the blob store; it starts only on the server that took it", what, name)
		}
		dst := filepath.Join(tmp, name)
		if err := layer.Pull(ctx, m.blobs.Puller.Cache, d, dst, what); err != nil {
			return err
		}
		layer.WriteMemo(dst, d, ref.Size) // a snapshot of a sandbox from it publishes it by digest
		lower = append(lower, filepath.Join(final, name))
	}
	tpl.ID, tpl.TeamID, tpl.Public, tpl.Rootfs, tpl.ContentKey, tpl.BuildID = r.ID, r.TeamID, false, "", "", r.BuildID
	tpl.Names = nil
	if r.Name != "" {
		tpl.Names = []string{r.Name}
	}
	tpl.Layers = append(lower, base.Lower()...)
	meta := &snapshotMeta{SnapshotInfo: infoOf(r), Template: tpl, Recorded: true}
	b, _ := json.Marshal(meta)
	if err := os.WriteFile(filepath.Join(tmp, "meta.json"), b, 0o600); err != nil {
		return err
	}
	m.snaps.mu.Lock()
	defer m.snaps.mu.Unlock()
	if cur := m.snaps.byID[r.ID]; cur != nil && cur.CreatedAt.Truncate(time.Millisecond).After(r.CreatedAt) {
		return nil // newer content taken here meanwhile
	}
	if err := m.placeSnapshotDir(tmp, final); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	m.snaps.byID[r.ID] = meta
	m.snaps.reg.Put(meta.template())
	m.log.InfoContext(ctx, "sandbox snapshot pulled from the blob store", "snapshot.id", r.ID, "layers", len(r.Layers),
		"bytes", r.SizeBytes, "elapsed", m.now().Sub(t0).Round(time.Millisecond))
	return nil
}
