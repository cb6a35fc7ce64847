package sandbox

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
)

// MaxForks bounds one fork request (each clone also counts against the
// team's sandbox cap and budgets).
const MaxForks = 20

// ForkResult is one clone of a fork: the sandbox, or why it did not start.
type ForkResult struct {
	Sandbox store.Sandbox
	Err     error
	// Memory: the clone was restored with the source's processes and
	// memory (false: booted from its files; also when a restore failed and
	// it started cold).
	Memory bool
}

// Fork clones a team's running sandbox count times (E2B's POST
// /sandboxes/{id}/fork). The source is frozen while its filesystem is
// copied once, then keeps running with its ID and end time. Each clone
// boots from that filesystem with its own ID, network, agent key and
// access token (a new one when the source has one), the source's
// metadata, env vars and settings, and timeout; its template's start
// command runs again. A sandbox under the snapshot runtime (runsc) is
// checkpointed instead and its clones restored with its processes and
// memory (memsnap.go; memory reports true).
func (m *Manager) Fork(ctx context.Context, teamID, id string, count int, timeout time.Duration) (results []ForkResult, memory bool, err error) {
	if count < 1 || count > MaxForks {
		return nil, false, errdefs.Invalid("count must be between 1 and %d, got %d", MaxForks, count)
	}
	if timeout < 0 || timeout > MaxTimeout {
		return nil, false, errdefs.Invalid("timeout must be between 0 and %d seconds", int64(MaxTimeout/time.Second))
	}
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	sb, err := m.Get(ctx, teamID, id)
	if err != nil {
		return nil, false, err
	}
	if sb.State == store.StateKilled || m.lookup(id) == nil {
		return nil, false, errdefs.NotFound("sandbox %s not found (it was killed)", id)
	}
	if sb.State != store.StateRunning {
		return nil, false, errdefs.Conflict("sandbox %s is paused; resume it (connect) before forking it", id)
	}
	tmp, err := os.MkdirTemp(m.mkSnapshotsDir(), ".fork-")
	if err != nil {
		return nil, false, fmt.Errorf("fork sandbox %s: %w", id, err)
	}
	defer os.RemoveAll(tmp) // each clone holds its own links by then
	stack, memory, err := m.captureStack(ctx, id, tmp, true)
	if err != nil {
		return nil, false, err
	}
	tpl := m.templateOf(ctx, sb)
	tpl.ID, tpl.Layers, tpl.Rootfs, tpl.ContentKey = sb.TemplateID, stack, "", ""
	tpl.Env = nil // the source's env vars already hold its template's
	req := CreateRequest{TeamID: teamID, Template: sb.TemplateID, Timeout: timeout, Metadata: sb.Metadata,
		EnvVars: sb.EnvVars, AllowInternet: sb.AllowInternet, AutoPause: sb.AutoPause, Secure: sb.AccessToken != "",
		Egress: m.egressOf(id)} // in force before the clone's processes resume
	if memory {
		req.restoreFrom = tmp
	}
	if lc := m.LifecycleOf(id); lc.DropMemory {
		keep := false
		req.AutoPauseMemory = &keep
	} else {
		req.AutoResume = lc.AutoResume
	}
	for range count {
		clone, err := m.createWith(ctx, req, tpl, false)
		r := ForkResult{Sandbox: clone, Err: err}
		if err == nil {
			r.Memory = m.restored(clone.ID)
		}
		results = append(results, r)
	}
	m.log.InfoContext(ctx, "sandbox forked", "sandbox.id", id, "count", count, "memory", memory)
	return results, memory, nil
}
