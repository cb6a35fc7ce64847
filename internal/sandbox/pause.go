package sandbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
)

// Pause freezes a running sandbox in place (cgroup freezer: memory kept, no
// CPU). While paused its end-of-life timer is stopped and the proxy answers
// 502, as E2B's does.
func (m *Manager) Pause(ctx context.Context, teamID, id string) error {
	if _, err := m.Get(ctx, teamID, id); err != nil {
		return err
	}
	return m.pause(ctx, id)
}

// PauseMemory pauses a team's sandbox with its memory (keepMemory true:
// frozen, as Pause) or without it (false: processes end, the filesystem
// is kept, and resuming boots the sandbox again from it).
func (m *Manager) PauseMemory(ctx context.Context, teamID, id string, keepMemory bool) error {
	if _, err := m.Get(ctx, teamID, id); err != nil {
		return err
	}
	return m.pauseWith(ctx, id, "", keepMemory)
}

func (m *Manager) pause(ctx context.Context, id string) error { return m.pauseWith(ctx, id, "", true) }

func (m *Manager) pauseReason(ctx context.Context, id, reason string) error {
	return m.pauseWith(ctx, id, reason, true)
}

func (m *Manager) pauseWith(ctx context.Context, id, reason string, keepMemory bool) error {
	p, ok := m.driver.(runtime.Pauser)
	if !ok {
		return errdefs.Precondition("the %s runtime cannot pause sandboxes", m.driver.Name())
	}
	l := m.lookup(id)
	if l == nil {
		return errdefs.NotFound("sandbox %s not found", id)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sb.State == store.StatePaused {
		return errdefs.Conflict("sandbox %s is already paused", id)
	}
	if !keepMemory {
		return m.pauseFS(ctx, l, reason)
	}
	if err := p.Pause(ctx, id); err != nil {
		return fmt.Errorf("pause sandbox %s: %w", id, err)
	}
	if l.timer != nil {
		l.timer.Stop()
	}
	sb := l.sb
	sb.State = store.StatePaused
	change := &store.Change{Type: EventPaused, Sandbox: sb, Data: map[string]any{
		"sandbox_metadata": nonNil(sb.Metadata), "execution": execution(sb, m.now().UTC())}}
	if reason != "" {
		change.Data["pause_reason"] = reason
	}
	if err := m.store.UpdateSandbox(ctx, sb, change); err != nil {
		_ = p.Resume(context.WithoutCancel(ctx), id)
		return err
	}
	l.sb = sb
	l.agent.close()
	m.log.InfoContext(ctx, "sandbox paused", "sandbox.id", id, "tier", TierMemory)
	m.disk.schedule(id)
	return nil
}

// resume thaws a paused sandbox and gives it a fresh end time. Without
// memory, or when it was paused without, it boots again from its
// filesystem.
func (m *Manager) resume(ctx context.Context, l *live, timeout int64, memory bool) error {
	p, ok := m.driver.(runtime.Pauser)
	if !ok {
		return errdefs.Precondition("the %s runtime cannot resume sandboxes", m.driver.Name())
	}
	l.mu.Lock()
	if l.sb.State != store.StatePaused {
		l.mu.Unlock()
		return nil
	}
	id := l.sb.ID
	m.disk.unschedule(id)
	tier := TierMemory
	if !memory {
		if _, fsOnly := m.fsPausedState(id); !fsOnly {
			if m.disk.onDisk(ctx, id) {
				l.mu.Unlock()
				return errdefs.Precondition("sandbox %s is paused to disk with its memory; resuming it without memory "+
					"is not supported here: resume it with its memory", id)
			}
			if err := m.dropMemory(ctx, l); err != nil {
				l.mu.Unlock()
				return err
			}
		}
	}
	if st, fsOnly := m.fsPausedState(id); fsOnly {
		tier = TierFilesystem
		if err := m.reboot(ctx, l, st); err != nil {
			l.mu.Unlock()
			return err
		}
	} else if m.disk.onDisk(ctx, id) {
		tier = TierDisk
		if err := m.disk.restore(ctx, l); err != nil {
			l.mu.Unlock()
			return err
		}
	} else if err := p.Resume(ctx, id); err != nil {
		l.mu.Unlock()
		return fmt.Errorf("resume sandbox %s: %w", id, err)
	}
	sb := l.sb
	sb.State = store.StateRunning
	sb.EndAt = m.now().UTC().Add(durationSeconds(timeout))
	change := &store.Change{Type: EventResumed, Sandbox: sb, Data: map[string]any{"sandbox_metadata": nonNil(sb.Metadata)}}
	if tier == TierFilesystem {
		change.Data["memory"] = false
	}
	if err := m.store.UpdateSandbox(ctx, sb, change); err != nil {
		if errors.Is(err, store.ErrMoved) && tier == TierFilesystem {
			// Another node took it over meanwhile: what booted here is
			// not the sandbox any more.
			m.destroy(context.WithoutCancel(ctx), id)
			l.mu.Unlock()
			m.dropMoved(l, "")
			return err
		}
		_ = p.Pause(context.WithoutCancel(ctx), id)
		l.mu.Unlock()
		return err
	}
	l.sb = sb
	l.mu.Unlock()
	if tier == TierFilesystem {
		// What was published is its filesystem before this boot: another
		// node must not resume that once it runs (or is paused with its
		// memory) here. The next pause without memory publishes again.
		m.forgetPublished(context.WithoutCancel(ctx), id)
	}
	m.arm(l)
	if tier != TierMemory {
		m.watchExit(l) // the restored or rebooted init is a new process
	}
	m.log.InfoContext(ctx, "sandbox resumed", "sandbox.id", id, "tier", tier)
	return nil
}
