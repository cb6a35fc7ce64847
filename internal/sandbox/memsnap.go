package sandbox

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/timerslack"
)

// Memory snapshots. A sandbox that runs under the snapshot runtime (runsc:
// restored from a template snapshot, or every sandbox of a server started
// with --runtime runsc) can be checkpointed: a snapshot or a fork of it
// then carries its processes and memory as well as its files. The source
// is checkpointed (which stops it) and restored at once from the same
// image, keeping its ID, token, agent key and end time; the image is laid
// out as a template snapshot's (state/, agent-key), so sandboxes start
// from it the way they start from a template snapshot: restored under the
// snapshot runtime with their own ID, network and writable layer, then
// rekeyed by their first /init (agentauth), which gives them their own
// agent key and access token. A sandbox that cannot be checkpointed, or
// whose checkpoint fails before it stopped, gets a filesystem snapshot.

// canCheckpointSandbox reports whether the sandbox runs under the snapshot
// runtime and that runtime can checkpoint.
func (m *Manager) canCheckpointSandbox(ctx context.Context, id string) bool {
	c := m.rt.snapshotter()
	if c == nil {
		return false
	}
	d, ok := c.(runtime.Driver)
	return ok && m.rt.of(ctx, id) == d
}

// memorySnapshot is a memory image of a sandbox in dir (state/, agent-key)
// and the layer stack its clones mount (own layers linked into dir).
// Called with l.mu held and the sandbox running. ok is false when the
// sandbox cannot be checkpointed and nothing was done.
func (m *Manager) memorySnapshot(ctx context.Context, l *live, dir string) (lower []string, ok bool, err error) {
	id := l.sb.ID
	if l.sb.State != store.StateRunning || !m.canCheckpointSandbox(ctx, id) {
		return nil, false, nil
	}
	if _, fsOnly := m.fsPausedState(id); fsOnly {
		return nil, false, nil
	}
	spec, err := m.specFor(ctx, l.sb)
	if err != nil {
		// Agent files replaced since it started: gVisor cannot save it.
		m.log.InfoContext(ctx, "sandbox cannot be checkpointed; taking its filesystem only", "sandbox.id", id, "reason", err)
		return nil, false, nil
	}
	c := m.rt.snapshotter()
	key := m.agentKey(id)
	if key.IsZero() {
		return nil, false, nil
	}
	lower, err = m.linkOwnLayers(ctx, spec.Lower, dir, m.layersDir(id))
	if err != nil {
		return nil, false, err
	}
	if err := writeKey(filepath.Join(dir, agentKeyFile), key); err != nil {
		return nil, false, fmt.Errorf("snapshot sandbox %s: %w", id, err)
	}
	t0 := time.Now()
	l.agent.close()
	if err := c.Checkpoint(ctx, id, filepath.Join(dir, "state")); err != nil {
		if st, serr := m.driver.State(ctx, id); serr == nil && st == runtime.StatusRunning {
			m.log.WarnContext(ctx, "checkpoint for a snapshot failed; taking its filesystem only", "sandbox.id", id, "err", err)
			return nil, false, nil
		}
		return nil, false, m.lostInSnapshot(ctx, l, err)
	}
	tSave := time.Since(t0)
	// Through Default, as runtimes.Restore does: the restored processes
	// inherit the forking thread's timer slack.
	restore := func() error { return c.Restore(ctx, spec, filepath.Join(dir, "state")) }
	if err := timerslack.Default(restore); err != nil {
		return nil, false, m.lostInSnapshot(ctx, l, err)
	}
	if err := l.agent.waitReady(ctx); err != nil {
		return nil, false, m.lostInSnapshot(ctx, l, err)
	}
	m.watchExit(l) // a new init
	m.log.InfoContext(ctx, "sandbox checkpointed for a snapshot and restored", "sandbox.id", id,
		"checkpoint", tSave.Round(time.Millisecond), "total", time.Since(t0).Round(time.Millisecond))
	return lower, true, nil
}

// lostInSnapshot records a sandbox that did not survive its checkpoint or
// the restore after it. Called with l.mu held: the kill runs once it is
// released.
func (m *Manager) lostInSnapshot(ctx context.Context, l *live, cause error) error {
	id := l.sb.ID
	m.log.ErrorContext(ctx, "sandbox lost while taking a memory snapshot", "sandbox.id", id, "err", cause)
	go func() {
		kctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := m.kill(kctx, id, ReasonCheckpointFailed); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			m.log.Error("record sandbox lost in a snapshot", "sandbox.id", id, "err", err)
		}
	}()
	return fmt.Errorf("snapshot sandbox %s: %w; the sandbox did not survive and is being removed", id, cause)
}

// memoryImage returns the dir of a snapshot or fork holding a complete
// memory image (state/, agent-key), or "".
func memoryImage(dir string) string {
	if snapshotComplete(dir) {
		return dir
	}
	return ""
}

// snapshotDirOf is the dir of a team's sandbox snapshot template, or "".
func (m *Manager) snapshotDirOf(tplID string) string {
	m.snaps.mu.Lock()
	defer m.snaps.mu.Unlock()
	if _, ok := m.snaps.byID[tplID]; !ok {
		return ""
	}
	return filepath.Join(m.sandboxSnapshotsDir(), tplID)
}

// restored reports whether a live sandbox was restored from a memory image
// (a template snapshot, a memory snapshot or a fork) rather than booted.
func (m *Manager) restored(id string) bool {
	l := m.lookup(id)
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.snapshot != ""
}
