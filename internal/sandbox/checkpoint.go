package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

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
	if m.disk.onDisk(ctx, id) {
		return TierDisk, nil
	}
	return TierMemory, nil
}

// PauseTo pauses a sandbox into a tier: "" or "memory" freezes it (the disk
// tier follows after the idle period set by WithPauseDiskAfter); "disk"
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
	if !m.disk.canCheckpoint() {
		return errdefs.Precondition("the %s runtime cannot checkpoint sandboxes to disk; pause without tier=disk "+
			"keeps it frozen in memory, or start the server with --runtime runsc", m.driver.Name())
	}
	if err := m.pause(ctx, id); err != nil && !errors.Is(err, errdefs.ErrConflict) {
		return err
	}
	return m.disk.checkpoint(ctx, id)
}

// ReasonCheckpointFailed is the kill reason of a sandbox that died in a
// failed checkpoint (runsc stops the sandbox when saving fails midway).
const ReasonCheckpointFailed = "checkpoint_failed"

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

// saveSpec writes the sandbox's spec, which holds its agent key (the
// init's env), before the sandbox starts. It is written in place, not
// through a rename: the file is new (destroy removes it) or replaced
// before a new container starts, and whatever a crash leaves half
// written belongs to a sandbox that did not start with it, which the
// restarted server removes (or, paused without memory, boots again after
// writing it anew).
func (m *Manager) saveSpec(spec runtime.Spec) error {
	b, _ := json.Marshal(savedSpec{Spec: spec, Agent: agentStamps(m.cfg.AgentDir)})
	err := os.WriteFile(m.specPath(spec.ID), b, 0o600)
	if errors.Is(err, os.ErrNotExist) { // the first sandbox of this data dir
		if err = os.MkdirAll(filepath.Dir(m.specPath(spec.ID)), 0o700); err == nil {
			err = os.WriteFile(m.specPath(spec.ID), b, 0o600)
		}
	}
	if err != nil {
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
	spec, err := m.loadSpec(ctx, sb)
	if spec.NetNS != "" {
		var jerr error
		if spec.NetNS, jerr = m.joinPath(sb.ID, spec.NetNS); jerr != nil {
			err = errors.Join(err, jerr)
		}
	}
	return spec, err
}

// netnsJoiner is a Network whose namespace paths hold only while this
// server process runs (network.Manager: see its JoinPath), so the one a
// sandbox started with is looked up again before it is used.
type netnsJoiner interface {
	JoinPath(id string) (string, error)
}

// joinPath returns the current path of the sandbox's network namespace,
// or saved when the network does not move its paths. When the namespace
// is gone it fails and gives no path: saved names a thread of an earlier
// server process (/proc/<pid>/task/<tid>/root/n/<id>), and once that pid
// is reused, by a sandbox's process too, the path resolves inside that
// process's root, where its owner may have put a symlink to any namespace
// (the host's: /proc/1/ns/net). The runtime would join it, and the server
// would set sysctls in it first (prepareNetNS).
func (m *Manager) joinPath(id, saved string) (string, error) {
	j, ok := m.network.(netnsJoiner)
	if !ok {
		return saved, nil
	}
	p, err := j.JoinPath(id)
	if err != nil {
		return "", fmt.Errorf("network namespace of sandbox %s: %w", id, err)
	}
	return p, nil
}

func (m *Manager) loadSpec(ctx context.Context, sb store.Sandbox) (runtime.Spec, error) {
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

// envdMaxProcs is the Go runtime's GOMAXPROCS for envd (see sandboxSpec).
const envdMaxProcs = "GOMAXPROCS=1"

// sandboxSpec is the runtime spec of a sandbox (see docs/architecture.md).
// lower is the template's layer stack, not the overlay mount of it
// (Template.Rootfs): with user namespaces each layer is mounted idmapped,
// which overlayfs mounts cannot be. The agent key goes to the init process
// alone (cmd/envd keeps it from every other process); a zero key
// (sandboxes started before keys) is left out.
func (m *Manager) sandboxSpec(sb store.Sandbox, lower []string, key agentauth.Key) runtime.Spec {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"E2B_SANDBOX=true", "E2B_SANDBOX_ID=" + sb.ID, "E2B_TEMPLATE_ID=" + sb.TemplateID,
		// envd serves a few requests at a time, each a relay of goroutines
		// waking one another: with one P its runtime starts a thread less
		// and faults ~60 pages less at every sandbox start, and no idle
		// thread is woken to look for work at each step. Given here, not by
		// envd itself: runtime.GOMAXPROCS in main stops the world once the
		// runtime has already started for two. No process envd starts
		// inherits it (their environment is built from scratch).
		envdMaxProcs}
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
