package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/template"
)

// Sandbox snapshots (E2B's POST /sandboxes/{id}/snapshots): a team's
// persistent image of a sandbox, usable as a template by that team alone
// (Sandbox.create("<id>:default")). A sandbox under runsc is checkpointed
// with its processes (memsnap.go); any other's snapshot is its
// filesystem: its writable layer, captured while it is frozen
// (runtime.LayerCapturer), over the layers of its earlier boots and its
// template's, and sandboxes created from it boot from that filesystem
// (their template's start command runs again). Each lives in <data-dir>/sandbox-snapshots/<id>/
// (meta.json, layer-N/), is registered in the template registry as a
// private template of its team, and is found again at start.
//
// A sandbox started from a snapshot (or a fork) gets hard-linked copies of
// the snapshot's own layers in its sandbox-layers dir, so deleting the
// snapshot never pulls a layer from under a running overlay.

// SnapshotRegistry is where snapshots are published as templates (the
// template registry).
type SnapshotRegistry interface {
	Put(t template.Template)
	Remove(id string) bool
	Get(ref string) (template.Template, bool)
}

// SetSnapshotRegistry publishes sandbox snapshots as templates, records
// them in st (the table every server shares) and loads the copies this
// node holds on disk: a copy whose row is gone (deleted through another
// server) or names newer content is removed; one from before the table
// is recorded there. Call before serving requests.
func (m *Manager) SetSnapshotRegistry(ctx context.Context, r SnapshotRegistry, st store.Snapshots) error {
	m.snaps.mu.Lock()
	m.snaps.reg, m.snaps.st = r, st
	m.snaps.byID = map[string]*snapshotMeta{}
	m.snaps.mu.Unlock()
	entries, err := os.ReadDir(m.sandboxSnapshotsDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("load sandbox snapshots: %w", err)
	}
	for _, e := range entries {
		dir := filepath.Join(m.sandboxSnapshotsDir(), e.Name())
		if strings.HasPrefix(e.Name(), ".") { // leftovers of an interrupted snapshot, pull or fork
			_ = os.RemoveAll(dir)
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
		var meta snapshotMeta
		if err == nil {
			err = json.Unmarshal(b, &meta)
		}
		if err != nil || meta.ID != e.Name() {
			m.log.Warn("ignoring unreadable sandbox snapshot", "dir", dir, "err", err)
			continue
		}
		keep, err := m.reconcileSnapshot(ctx, &meta, dir)
		if err != nil {
			return err
		}
		if !keep {
			_ = os.RemoveAll(dir)
			continue
		}
		m.snaps.mu.Lock()
		m.snaps.byID[meta.ID] = &meta
		m.snaps.mu.Unlock()
		r.Put(meta.template())
	}
	return nil
}

// SnapshotInfo describes one sandbox snapshot.
type SnapshotInfo struct {
	ID        string    `json:"id"`
	Name      string    `json:"name,omitempty"`
	TeamID    string    `json:"teamId"`
	SandboxID string    `json:"sandboxId"` // the sandbox it was taken from
	BuildID   string    `json:"buildId"`   // the template build under its layers
	CreatedAt time.Time `json:"createdAt"`
	// Memory: the snapshot holds the sandbox's processes and memory too
	// (memsnap.go); sandboxes start from it restored, not booted.
	Memory bool `json:"memory,omitempty"`
}

type snapshotMeta struct {
	SnapshotInfo
	Template template.Template `json:"template"` // as published (Layers: own copies first)
	// Recorded: the snapshot has a row in the shared table (a copy without
	// one was deleted through another server); false in copies from
	// before the table.
	Recorded bool `json:"recorded,omitempty"`
}

func (s *snapshotMeta) template() template.Template {
	t := s.Template
	t.CreatedAt, t.UpdatedAt = s.CreatedAt, s.CreatedAt
	return t
}

type snapshots struct {
	mu   sync.Mutex
	reg  SnapshotRegistry
	st   store.Snapshots          // the table: what exists, for every server
	byID map[string]*snapshotMeta // the copies this node holds
}

func (m *Manager) sandboxSnapshotsDir() string {
	return m.cfg.Data.SandboxSnapshots()
}

var snapshotNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)

// CreateSnapshot takes a snapshot of a team's sandbox (running or paused;
// a running one is frozen while its filesystem is copied). A name makes it
// reachable as "<name>:default"; an existing snapshot of the team with
// that name gets the new content under its ID.
func (m *Manager) CreateSnapshot(ctx context.Context, teamID, id, name string) (SnapshotInfo, error) {
	if name != "" {
		name = strings.ToLower(strings.TrimSuffix(name, ":"+template.DefaultTag))
		if !snapshotNameRE.MatchString(name) {
			return SnapshotInfo{}, errdefs.Invalid("snapshot name %q is invalid: use lowercase letters, digits, '.', '_' and '-' "+
				"(at most 128, starting with a letter or digit)", truncate(name, 100))
		}
	}
	m.snaps.mu.Lock()
	reg, st := m.snaps.reg, m.snaps.st
	m.snaps.mu.Unlock()
	if reg == nil || st == nil {
		return SnapshotInfo{}, errdefs.Precondition("sandbox snapshots are not enabled on this server")
	}
	sb, err := m.Get(ctx, teamID, id)
	if err != nil {
		return SnapshotInfo{}, err
	}
	snapID, err := m.snapshotIDFor(ctx, reg, teamID, name)
	if err != nil {
		return SnapshotInfo{}, err
	}
	tmp, err := os.MkdirTemp(m.mkSnapshotsDir(), ".snap-")
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot sandbox %s: %w", id, err)
	}
	defer os.RemoveAll(tmp) // after the rename: nothing
	stack, memory, err := m.captureStack(ctx, sb.ID, tmp, true)
	if err != nil {
		return SnapshotInfo{}, err
	}
	final := filepath.Join(m.sandboxSnapshotsDir(), snapID)
	tpl := m.templateOf(ctx, sb)
	tpl.ID, tpl.TeamID, tpl.Public, tpl.Rootfs, tpl.ContentKey = snapID, teamID, false, "", ""
	tpl.Names = nil
	if name != "" {
		tpl.Names = []string{name}
	}
	tpl.Layers = make([]string, len(stack))
	for i, l := range stack { // paths as they will be after the rename
		tpl.Layers[i] = strings.Replace(l, tmp, final, 1)
	}
	// Milliseconds, as the table keeps it: a node's copy is current when
	// its time equals the row's.
	meta := &snapshotMeta{SnapshotInfo: SnapshotInfo{ID: snapID, Name: name, TeamID: teamID, SandboxID: sb.ID,
		BuildID: tpl.BuildID, CreatedAt: m.now().UTC().Truncate(time.Millisecond), Memory: memory}, Template: tpl, Recorded: true}
	row, err := m.snapshotRow(ctx, meta, m.baseTemplateOf(ctx, sb), tmp, final)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot sandbox %s: %w", id, err)
	}
	b, _ := json.Marshal(meta)
	if err := os.WriteFile(filepath.Join(tmp, "meta.json"), b, 0o600); err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot sandbox %s: %w", id, err)
	}
	m.snaps.mu.Lock()
	defer m.snaps.mu.Unlock()
	if err := st.PutSnapshot(ctx, row); errors.Is(err, errdefs.ErrAlreadyExists) {
		return SnapshotInfo{}, errdefs.Conflict("the name %q is taken by another snapshot; choose another snapshot name", name)
	} else if err != nil {
		return SnapshotInfo{}, err
	}
	if err := m.placeSnapshotDir(tmp, final); err != nil {
		_ = st.DeleteSnapshot(context.WithoutCancel(ctx), teamID, snapID)
		return SnapshotInfo{}, fmt.Errorf("snapshot sandbox %s: %w", id, err)
	}
	m.snaps.byID[snapID] = meta
	reg.Put(meta.template())
	m.log.InfoContext(ctx, "sandbox snapshot taken", "sandbox.id", sb.ID, "snapshot.id", snapID, "name", name,
		"bytes", row.SizeBytes, "layers", len(row.Layers), "memory", memory)
	return meta.SnapshotInfo, nil
}

// placeSnapshotDir moves a finished snapshot dir into place, replacing
// the older content of the same snapshot (sandboxes started from it hold
// their own links to its layers). Called with m.snaps.mu held.
func (m *Manager) placeSnapshotDir(tmp, final string) error {
	if _, err := os.Stat(final); err == nil {
		old := final + ".old"
		_ = os.RemoveAll(old)
		if err := os.Rename(final, old); err != nil {
			return err
		}
		defer os.RemoveAll(old)
	}
	return os.Rename(tmp, final)
}

func (m *Manager) mkSnapshotsDir() string {
	_ = os.MkdirAll(m.sandboxSnapshotsDir(), 0o700)
	return m.sandboxSnapshotsDir()
}

// templateOf is the template a sandbox runs as now (for the start command,
// user and resources of what is created from its snapshot).
func (m *Manager) templateOf(ctx context.Context, sb store.Sandbox) template.Template {
	tpl, err := m.templates.Resolve(ctx, sb.TemplateID)
	if err != nil {
		m.log.WarnContext(ctx, "template of sandbox is gone; its snapshot keeps no start command",
			"sandbox.id", sb.ID, "template.id", sb.TemplateID, "err", err)
		tpl = template.Template{ID: sb.TemplateID, BuildID: sb.BuildID, User: "user", Workdir: "/home/user"}
	}
	tpl.CPUCount, tpl.MemoryMB, tpl.DiskMB = sb.CPUCount, sb.MemoryMB, sb.DiskMB
	return tpl
}

// captureStack copies a sandbox's filesystem into dir: its writable layer
// (frozen meanwhile when running) and hard-linked copies of its own layers
// (earlier boots, or what it was created from), and returns the layer
// stack, topmost first, whose lower part is its template's. With
// withMemory, a sandbox that can be checkpointed is saved with its
// processes instead (memory true; the writable layer is in the image).
func (m *Manager) captureStack(ctx context.Context, id, dir string, withMemory bool) (_ []string, memory bool, _ error) {
	l := m.lookup(id)
	if l == nil {
		return nil, false, errdefs.NotFound("sandbox %s not found (it is not running)", id)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if withMemory {
		lower, ok, err := m.memorySnapshot(ctx, l, dir)
		if err != nil || ok {
			return lower, ok, err
		}
	}
	stack, err := m.captureFiles(ctx, l, dir)
	return stack, false, err
}

// captureFiles is captureStack without memory. Called with l.mu held.
func (m *Manager) captureFiles(ctx context.Context, l *live, dir string) ([]string, error) {
	id := l.sb.ID
	var base []string
	var top string
	if st, fsOnly := m.fsPausedState(id); fsOnly {
		base = st.Lower
	} else {
		if m.disk.onDisk(ctx, id) {
			return nil, errdefs.Precondition("sandbox %s is paused to disk; resume it to take a snapshot", id)
		}
		spec, err := m.specFor(ctx, l.sb)
		if err != nil && !errors.Is(err, errdefs.ErrFailedPrecondition) {
			return nil, fmt.Errorf("snapshot sandbox %s: %w", id, err)
		}
		base = spec.Lower
		c, ok := m.rt.of(ctx, id).(runtime.LayerCapturer)
		if !ok {
			return nil, errdefs.Precondition("the %s runtime cannot save a sandbox's filesystem", m.driver.Name())
		}
		p, canFreeze := m.driver.(runtime.Pauser)
		if l.sb.State == store.StateRunning && canFreeze {
			if err := p.Pause(ctx, id); err != nil {
				return nil, fmt.Errorf("snapshot sandbox %s: freeze: %w", id, err)
			}
			defer func() { _ = p.Resume(context.WithoutCancel(ctx), id) }()
		}
		top = filepath.Join(dir, "layer-0")
		if err := c.CaptureLayer(ctx, id, top); err != nil {
			return nil, fmt.Errorf("snapshot sandbox %s: %w", id, err)
		}
	}
	stack, err := m.linkOwnLayers(ctx, base, dir, m.layersDir(id))
	if err != nil {
		return nil, err
	}
	if top != "" {
		stack = append([]string{top}, stack...)
	}
	return stack, nil
}

// linkOwnLayers replaces each layer of stack that lives under owner (a
// sandbox's or a snapshot's own dir, which goes with it) by a hard-linked
// copy in dir; shared layers (templates') stay.
func (m *Manager) linkOwnLayers(ctx context.Context, stack []string, dir string, owners ...string) ([]string, error) {
	out := make([]string, len(stack))
	n := 0
	for i, l := range stack {
		out[i] = l
		for _, o := range owners {
			if !strings.HasPrefix(l, o+string(filepath.Separator)) {
				continue
			}
			n++
			dst := filepath.Join(dir, fmt.Sprintf("base-%d", n))
			// cp -a -l: directories with their owners, modes and xattrs
			// (overlayfs opaque marks), everything else hard-linked, no
			// link followed. Layers are never written once captured.
			if out, err := exec.CommandContext(ctx, "cp", "-a", "-l", "--", l, dst).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("copy layer %s: %w: %s", l, err, strings.TrimSpace(string(out)))
			}
			out[i] = dst
			break
		}
	}
	return out, nil
}

// adoptLayers gives a sandbox about to start its own hard-linked copies of
// the layers of the snapshot or fork it starts from.
func (m *Manager) adoptLayers(ctx context.Context, id string, stack []string) ([]string, error) {
	own := false
	for _, l := range stack {
		own = own || strings.HasPrefix(l, m.sandboxSnapshotsDir()+string(filepath.Separator))
	}
	if !own {
		return stack, nil
	}
	if err := os.MkdirAll(m.layersDir(id), 0o700); err != nil {
		return nil, err
	}
	return m.linkOwnLayers(ctx, stack, m.layersDir(id), m.sandboxSnapshotsDir())
}
