package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
)

// Pause stops every task of the sandbox: crun and runc through the cgroup
// freezer, runsc inside gVisor's kernel (see pauseSentry).
func (d *Driver) Pause(ctx context.Context, id string) error {
	if d.name == "runsc" {
		return d.pauseSentry(ctx, id, true)
	}
	return d.freeze(ctx, id, "FROZEN")
}

// Resume lets a paused sandbox run again.
func (d *Driver) Resume(ctx context.Context, id string) error {
	if d.name == "runsc" {
		return d.pauseSentry(ctx, id, false)
	}
	return d.freeze(ctx, id, "THAWED")
}

// pausedMarker says a runsc sandbox was paused by `runsc pause`. It sits on
// the sandbox's tmpfs beside init.pid, where nothing inside reaches it, and
// survives a server restart like the sandbox itself.
func (p sandboxPaths) pausedMarker() string { return filepath.Join(p.dir, "upper", "paused") }

// paused reports whether the sandbox is paused: frozen or freezing in its
// cgroup, or (runsc) marked paused.
func (d *Driver) paused(p sandboxPaths, id string) bool {
	if d.name == "runsc" {
		if _, err := os.Lstat(p.pausedMarker()); err == nil {
			return true
		}
	}
	switch d.readFreezer(id) {
	case "FROZEN", "FREEZING":
		return true
	}
	return false
}

// pauseSentry pauses or resumes a runsc sandbox with runsc's own commands,
// which stop the tasks inside gVisor's kernel. The cgroup freezer must not
// be used there: freezing interrupts the seccomp-notify waits of systrap's
// syscall threads, gVisor then kills the stub process, and the sandbox's
// init dies of SIGSEGV once thawed (about 1 pause/resume in 20 on a loaded
// 2-core host; TestConformance/runsc/PauseResume caught it).
func (d *Driver) pauseSentry(ctx context.Context, id string, pause bool) error {
	st, err := d.State(ctx, id)
	if err != nil {
		return err
	}
	if st == runtime.StatusStopped || st == runtime.StatusCheckpointed {
		return errdefs.Precondition("sandbox %s is not running", id)
	}
	if (st == runtime.StatusPaused) == pause {
		return nil
	}
	marker := d.paths(id).pausedMarker()
	if !pause {
		// A sandbox frozen by an sbx from before runsc's own pause.
		if err := d.freeze(ctx, id, "THAWED"); err != nil {
			return err
		}
		if _, err := d.command(ctx, "resume", id); err != nil && !d.runscSays(ctx, id, "running") {
			return fmt.Errorf("resume sandbox %s: %w", id, err)
		}
		if err := os.Remove(marker); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("resume sandbox %s: %w", id, err)
		}
		return nil
	}
	// The marker goes first so that no moment reports a paused sandbox
	// as running; it is taken back when the pause fails.
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		return fmt.Errorf("pause sandbox %s: %w", id, err)
	}
	if _, err := d.command(ctx, "pause", id); err != nil && !d.runscSays(ctx, id, "paused") {
		_ = os.Remove(marker)
		return fmt.Errorf("pause sandbox %s: %w", id, err)
	}
	return nil
}

// runscSays reports whether `runsc state` gives the sandbox that status:
// a pause or resume that failed because it was already done is no failure.
func (d *Driver) runscSays(ctx context.Context, id, status string) bool {
	out, err := d.command(ctx, "state", id)
	if err != nil {
		return false
	}
	var s struct {
		Status string `json:"status"`
	}
	return json.Unmarshal(out, &s) == nil && s.Status == status
}

func (d *Driver) freeze(ctx context.Context, id, want string) error {
	st, err := d.State(ctx, id)
	if err != nil {
		return err
	}
	if st == runtime.StatusStopped {
		return errdefs.Precondition("sandbox %s is not running", id)
	}
	if d.readFreezer(id) == "" && want == "THAWED" {
		return nil // no freezer cgroup: nothing is frozen
	}
	if err := d.writeFreezer(id, want); err != nil {
		return fmt.Errorf("set sandbox %s to %s: %w", id, want, err)
	}
	// FREEZING can take a moment while tasks reach a safe point.
	for d.readFreezer(id) != want {
		select {
		case <-ctx.Done():
			return fmt.Errorf("set sandbox %s to %s: %w", id, want, ctx.Err())
		case <-time.After(100 * time.Microsecond):
		}
		_ = d.writeFreezer(id, want)
	}
	return nil
}
