package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/sbxdev/sbx/internal/agentauth"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
)

// Pause tiers. A paused sandbox is first frozen in memory (cgroup freezer:
// pause and resume take well under a millisecond, memory stays resident);
// the disk tier checkpoints it (processes, memory, open files and its
// writable layer) and frees its memory, at the price of a ~200 ms restore.
const (
	TierMemory = "memory"
	TierDisk   = "disk"
)

// diskTier holds the disk tier's policy and the per-sandbox timers that
// move frozen sandboxes to disk after an idle period.
type diskTier struct {
	mu     sync.Mutex
	after  time.Duration // 0 = never by time
	timers map[string]*time.Timer
}

func (m *Manager) canCheckpoint() bool {
	c, ok := m.driver.(runtime.Checkpointer)
	return ok && c.CanCheckpoint()
}

// checkpointDir is <data-dir>/checkpoints/<id>: spec.json (the runtime
// spec the sandbox must be restored with) and state/ (the driver's).
func (m *Manager) checkpointDir(id string) string {
	return m.cfg.Data.Checkpoint(id)
}

// onDisk reports whether the sandbox's processes live in a checkpoint.
func (m *Manager) onDisk(ctx context.Context, id string) bool {
	if !m.canCheckpoint() {
		return false
	}
	st, err := m.driver.State(ctx, id)
	return err == nil && st == runtime.StatusCheckpointed
}

// PauseTier reports the tier of a paused sandbox of the team ("memory" or
// "disk"), or "" when it is not paused.
func (m *Manager) PauseTier(ctx context.Context, teamID, id string) (string, error) {
	sb, err := m.Get(ctx, teamID, id)
	if err != nil || sb.State != store.StatePaused {
		return "", err
	}
	if _, fsOnly := m.fsPausedState(id); fsOnly {
		return TierFilesystem, nil
	}
	if m.onDisk(ctx, id) {
		return TierDisk, nil
	}
	return TierMemory, nil
}

// PauseTo pauses a sandbox into a tier: "" or "memory" freezes it (the disk
// tier follows after the idle period set by SetPauseDiskAfter); "disk"
// checkpoints it to disk at once, also when it is already frozen.
func (m *Manager) PauseTo(ctx context.Context, teamID, id, tier string) error {
	switch tier {
	case "", TierMemory, TierDisk:
	default:
		return errdefs.Invalid("unknown pause tier %q: use %q or %q", tier, TierMemory, TierDisk)
	}
	if _, err := m.Get(ctx, teamID, id); err != nil {
		return err
	}
	if tier != TierDisk {
		return m.pause(ctx, id)
	}
	if !m.canCheckpoint() {
		return errdefs.Precondition("the %s runtime cannot checkpoint sandboxes to disk; pause without tier=disk "+
			"keeps it frozen in memory, or start the server with --runtime runsc", m.driver.Name())
	}
	if err := m.pause(ctx, id); err != nil && !errors.Is(err, errdefs.ErrConflict) {
		return err
	}
	return m.checkpoint(ctx, id)
}

// scheduleDisk arms the move of a frozen sandbox to the disk tier.
func (m *Manager) scheduleDisk(id string) {
	m.disk.mu.Lock()
	defer m.disk.mu.Unlock()
	if m.disk.after <= 0 || !m.canCheckpoint() {
		return
	}
	if t := m.disk.timers[id]; t != nil {
		t.Stop()
	}
	if m.disk.timers == nil {
		m.disk.timers = map[string]*time.Timer{}
	}
	m.disk.timers[id] = time.AfterFunc(m.disk.after, func() {
		m.disk.mu.Lock()
		delete(m.disk.timers, id)
		m.disk.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		err := m.checkpoint(ctx, id)
		switch {
		case err == nil, errors.Is(err, errdefs.ErrNotFound):
		case errors.Is(err, errdefs.ErrFailedPrecondition): // resumed meanwhile, or cannot
			m.log.Info("idle paused sandbox stays in memory", "sandbox.id", id, "reason", err)
		default:
			m.log.Error("move idle paused sandbox to disk", "sandbox.id", id, "err", err)
		}
	})
}

func (m *Manager) unscheduleDisk(id string) {
	m.disk.mu.Lock()
	defer m.disk.mu.Unlock()
	if t := m.disk.timers[id]; t != nil {
		t.Stop()
		delete(m.disk.timers, id)
	}
}

// ReasonCheckpointFailed is the kill reason of a sandbox that died in a
// failed checkpoint (runsc stops the sandbox when saving fails midway).
const ReasonCheckpointFailed = "checkpoint_failed"

// checkpoint moves a frozen sandbox to the disk tier. A sandbox that did
// not survive a failed attempt is recorded as killed, not left "paused".
func (m *Manager) checkpoint(ctx context.Context, id string) error {
	err := m.checkpointLocked(ctx, id)
	if err == nil || errors.Is(err, errdefs.ErrNotFound) || errors.Is(err, errdefs.ErrFailedPrecondition) || errors.Is(err, errdefs.ErrConflict) {
		return err
	}
	// runsc may take a moment to stop a sandbox whose save failed.
	for range 20 {
		if st, serr := m.driver.State(ctx, id); serr != nil || st != runtime.StatusRunning && st != runtime.StatusPaused {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st, serr := m.driver.State(ctx, id); serr == nil && (st == runtime.StatusRunning || st == runtime.StatusPaused) {
		return err
	}
	m.log.Error("sandbox lost in a failed checkpoint", "sandbox.id", id, "err", err)
	if kerr := m.kill(context.WithoutCancel(ctx), id, ReasonCheckpointFailed); kerr != nil {
		m.log.Error("record sandbox lost in checkpoint", "sandbox.id", id, "err", kerr)
	}
	return fmt.Errorf("%w; the sandbox did not survive and was killed", err)
}

func (m *Manager) checkpointLocked(ctx context.Context, id string) error {
	c, ok := m.driver.(runtime.Checkpointer)
	if !ok || !c.CanCheckpoint() {
		return errdefs.Precondition("the %s runtime cannot checkpoint sandboxes", m.driver.Name())
	}
	l := m.lookup(id)
	if l == nil {
		return errdefs.NotFound("sandbox %s not found", id)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sb.State != store.StatePaused {
		return errdefs.Precondition("sandbox %s is not paused", id)
	}
	if m.onDisk(ctx, id) {
		return errdefs.Conflict("sandbox %s is already paused to disk", id)
	}
	m.unscheduleDisk(id)
	spec, err := m.specFor(ctx, l.sb)
	if err != nil {
		return fmt.Errorf("checkpoint sandbox %s: %w", id, err)
	}
	dir := m.checkpointDir(id)
	if err := os.RemoveAll(dir); err != nil { // leftovers of a failed attempt
		return fmt.Errorf("checkpoint sandbox %s: %w", id, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("checkpoint sandbox %s: %w", id, err)
	}
	b, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(dir, "spec.json"), b, 0o600); err != nil {
		return fmt.Errorf("checkpoint sandbox %s: %w", id, err)
	}
	t0 := time.Now()
	if err := c.Checkpoint(ctx, id, filepath.Join(dir, "state")); err != nil {
		_ = os.RemoveAll(dir)
		// The driver thaws to checkpoint; a failure leaves it running.
		if p, ok := m.driver.(runtime.Pauser); ok {
			if perr := p.Pause(context.WithoutCancel(ctx), id); perr != nil {
				m.log.Error("re-freeze after failed checkpoint", "sandbox.id", id, "err", perr)
			}
		}
		return fmt.Errorf("checkpoint sandbox %s: %w", id, err)
	}
	m.log.Info("sandbox paused to disk", "sandbox.id", id, "elapsed", time.Since(t0).Round(time.Millisecond),
		"image_bytes", dirSize(dir))
	return nil
}

// restore brings a disk-tier sandbox back running. Called with l.mu held.
func (m *Manager) restore(ctx context.Context, l *live) error {
	c, ok := m.driver.(runtime.Checkpointer)
	if !ok {
		return errdefs.Precondition("the %s runtime cannot restore sandboxes", m.driver.Name())
	}
	id := l.sb.ID
	dir := m.checkpointDir(id)
	b, err := os.ReadFile(filepath.Join(dir, "spec.json"))
	if err != nil {
		return fmt.Errorf("restore sandbox %s: %w", id, err)
	}
	var spec runtime.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return fmt.Errorf("restore sandbox %s: parse %s/spec.json: %w", id, dir, err)
	}
	t0 := time.Now()
	if err := c.Restore(ctx, spec, filepath.Join(dir, "state")); err != nil {
		return fmt.Errorf("restore sandbox %s: %w", id, err)
	}
	tRestore := time.Since(t0)
	if err := l.agent.waitReady(ctx); err != nil {
		return fmt.Errorf("restore sandbox %s: agent: %w", id, err)
	}
	m.log.Info("sandbox restored from disk", "sandbox.id", id, "restore", tRestore.Round(time.Millisecond),
		"total", time.Since(t0).Round(time.Millisecond))
	if err := os.RemoveAll(dir); err != nil {
		m.log.Warn("remove used checkpoint", "sandbox.id", id, "err", err)
	}
	return nil
}

// specPath is <data-dir>/specs/<id>.json: the runtime spec a sandbox was
// started with, kept because runsc restores only into the same spec and
// the template (its rootfs path) may change or go while it lives.
func (m *Manager) specPath(id string) string {
	return m.cfg.Data.Spec(id)
}

// savedSpec is what specPath holds. Agent stamps the files of the agent
// dir (device:inode) at start: if sbx was upgraded since, the sandbox's
// /.sbx/bin files were replaced under it, and gVisor cannot checkpoint a
// sandbox with such invalidated files (the failed save would kill it).
type savedSpec struct {
	Spec  runtime.Spec      `json:"spec"`
	Agent map[string]string `json:"agent,omitempty"`
}

func (m *Manager) saveSpec(spec runtime.Spec) error {
	if err := os.MkdirAll(filepath.Dir(m.specPath(spec.ID)), 0o700); err != nil {
		return fmt.Errorf("save spec of sandbox %s: %w", spec.ID, err)
	}
	b, _ := json.Marshal(savedSpec{Spec: spec, Agent: agentStamps(m.cfg.AgentDir)})
	if err := os.WriteFile(m.specPath(spec.ID), b, 0o600); err != nil {
		return fmt.Errorf("save spec of sandbox %s: %w", spec.ID, err)
	}
	return nil
}

func agentStamps(dir string) map[string]string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for _, e := range entries {
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join(dir, e.Name()), &st) == nil {
			out[e.Name()] = fmt.Sprintf("%d:%d", st.Dev, st.Ino)
		}
	}
	return out
}

// specFor returns the runtime spec a sandbox was started with: the saved
// one, or for sandboxes started before specs were saved, rebuilt from its
// template. It refuses (precondition) when the agent files changed since.
func (m *Manager) specFor(ctx context.Context, sb store.Sandbox) (runtime.Spec, error) {
	if b, err := os.ReadFile(m.specPath(sb.ID)); err == nil {
		var saved savedSpec
		if err := json.Unmarshal(b, &saved); err != nil {
			return saved.Spec, fmt.Errorf("parse %s: %w", m.specPath(sb.ID), err)
		}
		now := agentStamps(m.cfg.AgentDir)
		for name, stamp := range saved.Agent {
			if now[name] != stamp {
				return saved.Spec, errdefs.Precondition("sandbox %s cannot go to disk: the agent binary %s was replaced "+
					"since it started (sbx upgraded), which gVisor cannot checkpoint; it stays paused in memory", sb.ID, name)
			}
		}
		return saved.Spec, nil
	}
	tpl, err := m.templates.Resolve(ctx, sb.TemplateID)
	if err != nil {
		return runtime.Spec{}, fmt.Errorf("template %s: %w", sb.TemplateID, err)
	}
	return m.sandboxSpec(sb, tpl.Lower(), agentauth.Key{}), nil
}

// sandboxSpec is the runtime spec of a sandbox (see docs/architecture.md).
// lower is the template's layer stack, not the overlay mount of it
// (Template.Rootfs): with user namespaces each layer is mounted idmapped,
// which overlayfs mounts cannot be. The agent key goes to the init process
// alone (cmd/envd keeps it from every other process); a zero key
// (sandboxes started before keys) is left out.
func (m *Manager) sandboxSpec(sb store.Sandbox, lower []string, key agentauth.Key) runtime.Spec {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"E2B_SANDBOX=true", "E2B_SANDBOX_ID=" + sb.ID, "E2B_TEMPLATE_ID=" + sb.TemplateID}
	if !key.IsZero() {
		env = append(env, agentauth.EnvVar+"="+key.Hex())
	}
	mounts := append(m.sandboxMounts(sb), m.mountsOf(sb.ID)...)
	return runtime.Spec{
		ID: sb.ID, Lower: lower, Hostname: "sbx-" + sb.ID[:min(8, len(sb.ID))],
		Args:      []string{"/.sbx/bin/envd", "--init", "--socket", "/.sbx/run/envd.sock", "--port", "49983"},
		Env:       env,
		Cwd:       "/",
		Mounts:    mounts,
		Resources: runtime.Resources{CPUs: float64(sb.CPUCount), MemoryMB: sb.MemoryMB, PidsMax: DefaultPidsMax, DiskMB: sb.DiskMB},
		NetNS:     sb.NetNS,
		// envd lets go of it around a checkpoint (SIGUSR1/SIGUSR2, cmd/envd).
		HostSocket: filepath.Join(m.runDir(sb.ID), agentSocket),
	}
}

func (m *Manager) sandboxMounts(sb store.Sandbox) []runtime.Mount {
	ms := []runtime.Mount{
		{Source: m.cfg.AgentDir, Target: "/.sbx/bin", ReadOnly: true},
		// envd (root inside) creates its socket there.
		{Source: m.runDir(sb.ID), Target: "/.sbx/run", Owned: true},
	}
	if bm, ok := m.bootIDMount(sb.ID, sb.Runtime); ok {
		ms = append(ms, bm)
	}
	return ms
}

// checkpointPaused moves every memory-tier paused sandbox to disk (server
// shutdown with the disk tier enabled), so their memory is freed and they
// survive a reboot of the runtime's state.
func (m *Manager) checkpointPaused(ctx context.Context) {
	m.disk.mu.Lock()
	enabled := m.disk.after > 0
	m.disk.mu.Unlock()
	if !enabled || !m.canCheckpoint() {
		return
	}
	for _, sb := range m.Live() {
		if sb.State != store.StatePaused || m.onDisk(ctx, sb.ID) {
			continue
		}
		if err := m.checkpoint(ctx, sb.ID); err != nil {
			m.log.Warn("move paused sandbox to disk at shutdown; it stays frozen", "sandbox.id", sb.ID, "err", err)
		}
	}
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
