package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/google/uuid"

	"github.com/sbxdev/sbx/internal/atomicfile"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/network"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/template"
)

// Boots. A sandbox paused without its memory (E2B's pause {"memory":
// false}, or an auto-pause with autoPauseMemory false) keeps only its
// filesystem: its writable layer is captured into
// <data-dir>/sandbox-layers/<id>/layer-N (runtime.LayerCapturer: ids
// shifted back, whiteouts kept), its container, network and agent are
// torn down, and resuming it boots it again over that layer (on top of
// the layers of its earlier boots and its template's): a new init, the
// template's start command again, new address. Each boot of a sandbox
// has its own /proc/sys/kernel/random/boot_id: a host file
// <data-dir>/boot-ids/<id> (0444) bind-mounted read-only over it, made
// anew before every start (otherwise every sandbox reads the host's).

// bootIDTarget is where a sandbox reads its boot ID.
const bootIDTarget = "/proc/sys/kernel/random/boot_id"

func (m *Manager) bootIDPath(id string) string {
	return m.cfg.Data.BootID(id)
}

// layersDir holds the filesystems of a sandbox's earlier boots (secret:
// they are the tenant's files) and, while it is paused without memory,
// fsPausedFile.
func (m *Manager) layersDir(id string) string {
	return m.cfg.Data.SandboxLayersOf(id)
}

// fsPausedFile marks a sandbox paused without memory; it holds the layer
// stack (topmost first) its next boot mounts.
const fsPausedFile = "paused.json"

type fsPaused struct {
	Lower []string `json:"lower"`
	// Egress is the sandbox's egress policy: the teardown at the pause
	// drops it from the firewall, and the next boot puts it back before
	// anything runs.
	Egress network.Policy `json:"egress,omitzero"`
}

// newBootID writes a fresh boot ID for the sandbox's next boot. A boot ID
// already there (a sandbox booted again after a pause without memory) is
// replaced, not rewritten: a running boot keeps the inode it mounted. The
// first is written in place, without a temporary file and a rename: no
// sandbox runs before this returns, and one whose start a crash cut short
// is removed with the file at the restarted server's recovery (it is a
// pooled sandbox or one not recorded as started), so none boots with a
// half-written ID.
func (m *Manager) newBootID(id string) error {
	u, err := uuid.NewRandomFromReader(rand.Reader)
	if err != nil {
		return fmt.Errorf("boot id of sandbox %s: %w", id, err)
	}
	path := m.bootIDPath(id)
	err = writeNew(path, []byte(u.String()+"\n"), 0o444)
	if errors.Is(err, os.ErrNotExist) { // the first sandbox of this data dir
		if err = os.MkdirAll(filepath.Dir(path), 0o711); err == nil {
			err = writeNew(path, []byte(u.String()+"\n"), 0o444)
		}
	}
	if errors.Is(err, os.ErrExist) {
		err = replaceBootID(path, u.String())
	}
	if err != nil {
		return fmt.Errorf("boot id of sandbox %s: %w", id, err)
	}
	return nil
}

// writeNew creates path, which must not exist, with mode (whatever the
// umask) and content b.
func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode)
	if err != nil {
		return err
	}
	// Readable by a sandbox's root that is an unprivileged host uid.
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(b)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
	}
	return err
}

// replaceBootID puts a new boot ID in place of the one at path: whole, for
// a boot that mounts it, but not synced. A boot ID is never read after a
// host crash: every boot writes a fresh one first (newBootID), so a crash
// can only lose one that no sandbox uses any more, and the two fsyncs
// would add 0.2 ms (ext4 on virtio, 0.43 against 0.20 ms) to every boot
// after a pause without memory for nothing.
func replaceBootID(path, u string) error {
	return atomicfile.WriteVolatile(path, []byte(u+"\n"), 0o444)
}

// bootIDMount is the boot ID's mount, when the sandbox has a boot ID file.
// runsc is left out: gVisor's /proc is its own and already gives each
// sandbox its own boot ID.
func (m *Manager) bootIDMount(id string, runtimeName string) (runtime.Mount, bool) {
	if runtimeName == "runsc" {
		return runtime.Mount{}, false
	}
	if _, err := os.Stat(m.bootIDPath(id)); err != nil {
		return runtime.Mount{}, false
	}
	return runtime.Mount{Source: m.bootIDPath(id), Target: bootIDTarget, ReadOnly: true}, true
}

// fsPausedState reads the marker of a sandbox paused without memory.
func (m *Manager) fsPausedState(id string) (fsPaused, bool) {
	b, err := os.ReadFile(filepath.Join(m.layersDir(id), fsPausedFile))
	if err != nil {
		return fsPaused{}, false
	}
	var st fsPaused
	if json.Unmarshal(b, &st) != nil || len(st.Lower) == 0 {
		return fsPaused{}, false
	}
	return st, true
}

// captureLayer copies the sandbox's writable layer into a new layer dir of
// its own and returns its path. The caller keeps the sandbox from writing
// (frozen).
func (m *Manager) captureLayer(ctx context.Context, id string) (string, error) {
	c, ok := m.rt.of(ctx, id).(runtime.LayerCapturer)
	if !ok {
		return "", errdefs.Precondition("the %s runtime cannot save a sandbox's filesystem", m.driver.Name())
	}
	dir := m.layersDir(id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("save filesystem of sandbox %s: %w", id, err)
	}
	n := 1
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if v, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "layer-")); err == nil && v >= n {
			n = v + 1
		}
	}
	dst := filepath.Join(dir, fmt.Sprintf("layer-%d", n))
	if err := c.CaptureLayer(ctx, id, dst); err != nil {
		_ = os.RemoveAll(dst)
		return "", fmt.Errorf("save filesystem of sandbox %s: %w", id, err)
	}
	return dst, nil
}

// pauseFS pauses a running sandbox without its memory (see dropMemory).
// Called with l.mu held and the sandbox running.
func (m *Manager) pauseFS(ctx context.Context, l *live, reason string) error {
	id := l.sb.ID
	p, canFreeze := m.driver.(runtime.Pauser)
	if canFreeze {
		if err := p.Pause(ctx, id); err != nil { // nothing writes while the layer is copied
			return fmt.Errorf("pause sandbox %s: %w", id, err)
		}
	}
	if l.timer != nil {
		l.timer.Stop()
	}
	sb := l.sb
	sb.State = store.StatePaused
	change := &store.Change{Type: EventPaused, Sandbox: sb, Data: map[string]any{
		"sandbox_metadata": nonNil(sb.Metadata), "execution": execution(sb, m.now().UTC()), "memory": false}}
	if reason != "" {
		change.Data["pause_reason"] = reason
	}
	if err := m.store.UpdateSandbox(ctx, sb, change); err != nil {
		if canFreeze {
			_ = p.Resume(context.WithoutCancel(ctx), id)
		}
		m.arm(l)
		return err
	}
	l.sb = sb
	if err := m.dropMemory(ctx, l); err != nil {
		// Recorded paused and still frozen in memory: a resume thaws it.
		m.log.ErrorContext(ctx, "pause without memory failed; the sandbox stays paused in memory", "sandbox.id", id, "err", err)
		return err
	}
	m.log.InfoContext(ctx, "sandbox paused", "sandbox.id", id, "tier", TierFilesystem)
	return nil
}

// dropMemory saves a frozen, paused sandbox's writable layer and removes
// its container, network and agent: what is left is its filesystem, which
// reboot boots again. Called with l.mu held (the exit watcher then sees
// it paused and ignores the end of its init).
func (m *Manager) dropMemory(ctx context.Context, l *live) error {
	id := l.sb.ID
	spec, err := m.specFor(ctx, l.sb)
	if err != nil && !errors.Is(err, errdefs.ErrFailedPrecondition) { // stale agent stamps do not matter here
		return fmt.Errorf("save filesystem of sandbox %s: %w", id, err)
	}
	layer, err := m.captureLayer(ctx, id)
	if err != nil {
		return err
	}
	egress := m.egressOf(id)
	if err := m.keepEgress(id, l.lifecycle, egress); err != nil {
		_ = os.RemoveAll(layer)
		return fmt.Errorf("save filesystem of sandbox %s: %w", id, err)
	}
	marker, _ := json.Marshal(fsPaused{Lower: append([]string{layer}, spec.Lower...), Egress: egress})
	if err := replaceFile(filepath.Join(m.layersDir(id), fsPausedFile), marker, 0o600); err != nil {
		_ = os.RemoveAll(layer)
		return fmt.Errorf("save filesystem of sandbox %s: %w", id, err)
	}
	m.disk.unschedule(id)
	l.agent.close()
	// Its volumes are mounted again when it boots (destroy forgets them,
	// as it must at a kill). A sandbox that mounts volumes stays on this
	// node: their images are here, and another node resuming it would
	// boot it without them.
	mounts := m.mountsOf(id)
	m.destroy(context.WithoutCancel(ctx), id)
	m.setMounts(id, mounts)
	if len(mounts) > 0 {
		m.log.InfoContext(ctx, "paused sandbox not published to the blob store: it mounts volumes kept on this node, so it resumes here only",
			"sandbox.id", id)
		return nil
	}
	m.publishPaused(ctx, l.sb, append([]string{layer}, spec.Lower...))
	return nil
}

// forgetFiles removes what a sandbox keeps across its boots (its saved
// layers, its boot ID): at its kill, not at each teardown.
func (m *Manager) forgetFiles(id string) {
	if err := os.RemoveAll(m.layersDir(id)); err != nil {
		m.log.Warn("remove saved filesystem of sandbox", "sandbox.id", id, "err", err)
	}
	_ = os.Remove(m.bootIDPath(id))
}

// TierFilesystem is the pause tier of a sandbox paused without memory.
const TierFilesystem = "filesystem"

// reboot boots a sandbox paused without memory again from its saved
// filesystem. Called with l.mu held; on success l runs a new agent.
func (m *Manager) reboot(ctx context.Context, l *live, st fsPaused) error {
	sb := l.sb
	tpl, err := m.templates.Resolve(ctx, sb.TemplateID)
	if err != nil {
		// The template went: boot the saved layers without its start command.
		m.log.WarnContext(ctx, "template of a paused sandbox is gone; booting it without a start command",
			"sandbox.id", sb.ID, "template.id", sb.TemplateID, "err", err)
		tpl = template.Template{ID: sb.TemplateID, User: "user", Workdir: "/home/user"}
	}
	tpl.Layers = st.Lower
	egress := st.Egress
	if cur := m.egressOf(sb.ID); !cur.Empty() {
		// Set (PUT /network) while it was paused: the pause's teardown
		// dropped the one the marker recorded, so this one is newer.
		egress = cur
	}
	nl, err := m.startWith(ctx, &sb, tpl, launch{egress: egress})
	if err != nil {
		return fmt.Errorf("boot paused sandbox %s again: %w", sb.ID, err)
	}
	_ = os.Remove(filepath.Join(m.layersDir(sb.ID), fsPausedFile))
	l.sb.NetNS, l.sb.Runtime = sb.NetNS, sb.Runtime
	l.agent = nl.agent
	l.cpu = cpuSample{}
	return nil
}
