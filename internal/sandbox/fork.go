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
}

// Fork clones a team's running sandbox count times (E2B's POST
// /sandboxes/{id}/fork). The source is frozen while its filesystem is
// copied once, then keeps running with its ID and end time. Each clone
// boots from that filesystem with its own ID, network, agent key and
// access token (a new one when the source has one), the source's
// metadata, env vars and settings, and timeout; its template's start
// command runs again. Memory and processes are not carried over (memory
// reports false): the oci runtimes here checkpoint only under runsc, whose
// clones of a live sandbox this does not take yet.
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
	stack, err := m.captureStack(ctx, id, tmp)
	if err != nil {
		return nil, false, err
	}
	tpl := m.templateOf(ctx, sb)
	tpl.ID, tpl.Layers, tpl.Rootfs, tpl.ContentKey = sb.TemplateID, stack, "", ""
	tpl.Env = nil // the source's env vars already hold its template's
	req := CreateRequest{TeamID: teamID, Template: sb.TemplateID, Timeout: timeout, Metadata: sb.Metadata,
		EnvVars: sb.EnvVars, AllowInternet: sb.AllowInternet, AutoPause: sb.AutoPause, Secure: sb.AccessToken != ""}
	if lc := m.LifecycleOf(id); lc.DropMemory {
		keep := false
		req.AutoPauseMemory = &keep
	} else {
		req.AutoResume = lc.AutoResume
	}
	for range count {
		clone, err := m.createWith(ctx, req, tpl, false)
		results = append(results, ForkResult{Sandbox: clone, Err: err})
	}
	m.log.InfoContext(ctx, "sandbox forked", "sandbox.id", id, "count", count)
	return results, false, nil
}
