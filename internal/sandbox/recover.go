package sandbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sbxdev/sbx/internal/agentauth"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
)

// Recover reconciles the store with the runtime after a (re)start: running
// sandboxes are reattached, ones whose container is gone (a host reboot, a
// wiped runtime state dir, a container deleted behind the server's back)
// are recorded killed (ReasonLost) and their leftovers removed, ones whose
// end time passed while the server was down are ended as at a timeout, and
// containers nobody knows are removed. It returns before the API serves,
// so no list ever shows a lost or expired sandbox running.
func (m *Manager) Recover(ctx context.Context) error {
	sbs, err := m.recoverable(ctx)
	if err != nil {
		return fmt.Errorf("recover sandboxes: %w", err)
	}
	known := map[string]bool{}
	for _, sb := range sbs {
		known[sb.ID] = true
		if sb.NodeID != "" && sb.NodeID != m.cfg.NodeID {
			if err := m.claim(ctx, sb); err != nil {
				m.log.Error("take over a sandbox recorded under another node name", "sandbox.id", sb.ID, "node", sb.NodeID, "err", err)
				continue
			}
		}
		sb.NodeID = m.cfg.NodeID // a row of no node becomes this one's
		if _, fsOnly := m.fsPausedState(sb.ID); fsOnly && sb.State == store.StatePaused {
			// Paused without memory: no container, its filesystem waits.
			m.track(&live{sb: sb, agent: m.dial(sb.ID, m.runDir(sb.ID), agentauth.Key{}), lifecycle: m.loadLifecycle(sb.ID)})
			m.log.Info("reattached sandbox paused without memory", "sandbox.id", sb.ID)
			continue
		}
		st, err := m.driver.State(ctx, sb.ID)
		if err != nil || st != runtime.StatusRunning && st != runtime.StatusPaused && st != runtime.StatusCheckpointed {
			m.recordLost(ctx, sb, st, err)
			continue
		}
		l := &live{sb: sb, agent: m.dial(sb.ID, m.runDir(sb.ID), m.agentKey(sb.ID)), lifecycle: m.loadLifecycle(sb.ID)}
		m.track(l)
		if sb.State == store.StatePaused && st == runtime.StatusPaused {
			m.disk.schedule(sb.ID)
		}
		m.log.Info("reattached sandbox", "sandbox.id", sb.ID, "end_at", sb.EndAt, "runtime_state", st)
		m.expireAtStart(l)
	}
	m.sweepMoved(ctx, known)
	ids, err := m.driver.List(ctx)
	if err != nil {
		return fmt.Errorf("list runtime sandboxes: %w", err)
	}
	for _, id := range ids {
		if known[id] {
			continue
		}
		if owner, ok := m.ownedElsewhere(ctx, id); ok {
			// The data dir is this server's alone (datadir.LockServer),
			// yet the row names another node: the server was restarted
			// under another node name (a new --listen port changes the
			// default) or its data dir copied. Never remove what the
			// database says another node runs.
			m.log.Warn("leaving alone a sandbox container the database gives to another node", "sandbox.id", id, "node", owner)
			continue
		}
		m.log.Warn("removing orphaned sandbox container", "sandbox.id", id)
		m.destroy(ctx, id)
		m.forgetFiles(id)
	}
	return nil
}

// recoverable lists the rows Recover reconciles: this node's sandboxes
// and those of no node (rows from before nodes). On a database no other
// server shares (Config.SoleServer) every row not killed is this
// server's, whatever node name it was written under: nothing else would
// ever recover or sweep it, and it would stay listed running forever.
func (m *Manager) recoverable(ctx context.Context) ([]store.Sandbox, error) {
	if m.cfg.SoleServer {
		return m.store.LiveSandboxes(ctx)
	}
	// Another server sharing the database runs the others, alive although
	// this host has no container for them.
	return m.store.NodeSandboxes(ctx, m.cfg.NodeID)
}

// claim makes a row written under an earlier node name of this server
// (Config.SoleServer only) a row of no node, which this server's writes
// then take (UpdateSandbox accepts a row of no node, and a write naming
// no node, whatever the row's node).
func (m *Manager) claim(ctx context.Context, sb store.Sandbox) error {
	m.log.Warn("taking over a sandbox recorded under another node name (the server was restarted under a new --node-name or --listen port)",
		"sandbox.id", sb.ID, "node", sb.NodeID)
	sb.NodeID = ""
	return m.store.UpdateSandbox(ctx, sb, nil)
}

// recordLost records a sandbox whose container is gone as killed
// (ReasonLost, with its killed event, and so its webhooks) and removes
// what is left of it on the host: mounts, network namespace and address
// lease, cgroups, files in the data dir. It is never tracked: its end
// timer must not race the record with a timeout of its own.
func (m *Manager) recordLost(ctx context.Context, sb store.Sandbox, st runtime.Status, stateErr error) {
	m.log.Warn("sandbox lost while the server was down (its container is gone); recording it killed",
		"sandbox.id", sb.ID, "runtime_state", st, "err", stateErr, "reason", ReasonLost)
	m.destroy(ctx, sb.ID)
	m.forgetFiles(sb.ID)
	killed, change := KilledChange(sb, ReasonLost, m.now().UTC())
	if err := m.store.UpdateSandbox(context.WithoutCancel(ctx), killed, change); err != nil {
		m.log.Error("record lost sandbox", "sandbox.id", sb.ID, "err", err)
		return
	}
	m.forgetPublished(context.WithoutCancel(ctx), sb.ID)
}

// expireAtStart ends at once, before the API serves, a reattached
// sandbox whose end time passed while the server was down (killed as a
// timeout, or paused if it pauses on timeout), rather than leaving it to
// its timer, which would let the first lists show it running.
func (m *Manager) expireAtStart(l *live) {
	l.mu.Lock()
	due := l.sb.State == store.StateRunning && !m.now().Before(l.sb.EndAt)
	stopped := due && l.timer != nil && l.timer.Stop()
	l.mu.Unlock()
	if stopped { // else not due, or the timer already fired: expire runs
		m.log.Info("sandbox expired while the server was down", "sandbox.id", l.sb.ID, "end_at", l.sb.EndAt.Format(time.RFC3339))
		m.expire(l.sb.ID)
	}
}

// ownedElsewhere reports whether the database names another node as
// running sandbox id (or cannot say: then it is left alone too).
func (m *Manager) ownedElsewhere(ctx context.Context, id string) (string, bool) {
	sb, err := m.store.Sandbox(ctx, id)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return "", false // never stored: a pooled or build sandbox, or a create cut short
	case err != nil:
		m.log.Error("look up a sandbox container's owner; leaving it", "sandbox.id", id, "err", err)
		return "unknown", true
	case sb.State != store.StateKilled && sb.NodeID != "" && sb.NodeID != m.cfg.NodeID:
		return sb.NodeID, true
	}
	return "", false
}
