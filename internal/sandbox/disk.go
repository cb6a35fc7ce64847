package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/datadir"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
)

// diskTier is pause's disk tier: it checkpoints frozen sandboxes to disk
// (at once, after an idle period, or at shutdown) and restores them. It
// finds and records sandboxes through the manager (diskHost).
type diskTier struct {
	host   diskHost
	driver runtime.Driver
	data   datadir.Layout
	log    *slog.Logger

	mu     sync.Mutex
	after  time.Duration // 0 = never by time
	timers map[string]*time.Timer
}

// diskHost is what the disk tier needs of the manager.
type diskHost interface {
	lookup(id string) *live
	Live() []store.Sandbox
	// specFor is the runtime spec the sandbox must be restored with.
	specFor(ctx context.Context, sb store.Sandbox) (runtime.Spec, error)
	// joinPath is the current path of the sandbox's network namespace,
	// saved being the one it was checkpointed with (see specFor).
	joinPath(id, saved string) (string, error)
	// kill records a sandbox that did not survive its checkpoint.
	kill(ctx context.Context, id, reason string) error
}

func (d *diskTier) canCheckpoint() bool {
	c, ok := d.driver.(runtime.Checkpointer)
	return ok && c.CanCheckpoint()
}

// checkpointDir is <data-dir>/checkpoints/<id>: spec.json (the runtime
// spec the sandbox must be restored with) and state/ (the driver's).
func (d *diskTier) dir(id string) string {
	return d.data.Checkpoint(id)
}

// onDisk reports whether the sandbox's processes live in a checkpoint.
func (d *diskTier) onDisk(ctx context.Context, id string) bool {
	if !d.canCheckpoint() {
		return false
	}
	st, err := d.driver.State(ctx, id)
	return err == nil && st == runtime.StatusCheckpointed
}

// scheduleDisk arms the move of a frozen sandbox to the disk tier.
func (d *diskTier) schedule(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.after <= 0 || !d.canCheckpoint() {
		return
	}
	if t := d.timers[id]; t != nil {
		t.Stop()
	}
	if d.timers == nil {
		d.timers = map[string]*time.Timer{}
	}
	d.timers[id] = time.AfterFunc(d.after, func() {
		d.mu.Lock()
		delete(d.timers, id)
		d.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		err := d.checkpoint(ctx, id)
		switch {
		case err == nil, errors.Is(err, errdefs.ErrNotFound):
		case errors.Is(err, errdefs.ErrFailedPrecondition): // resumed meanwhile, or cannot
			d.log.Info("idle paused sandbox stays in memory", "sandbox.id", id, "reason", err)
		default:
			d.log.Error("move idle paused sandbox to disk", "sandbox.id", id, "err", err)
		}
	})
}

func (d *diskTier) unschedule(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t := d.timers[id]; t != nil {
		t.Stop()
		delete(d.timers, id)
	}
}

// checkpoint moves a frozen sandbox to the disk tier. A sandbox that did
// not survive a failed attempt is recorded as killed, not left "paused".
func (d *diskTier) checkpoint(ctx context.Context, id string) error {
	err := d.checkpointLocked(ctx, id)
	if err == nil || errors.Is(err, errdefs.ErrNotFound) || errors.Is(err, errdefs.ErrFailedPrecondition) || errors.Is(err, errdefs.ErrConflict) {
		return err
	}
	// runsc may take a moment to stop a sandbox whose save failed.
	for range 20 {
		if st, serr := d.driver.State(ctx, id); serr != nil || st != runtime.StatusRunning && st != runtime.StatusPaused {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st, serr := d.driver.State(ctx, id); serr == nil && (st == runtime.StatusRunning || st == runtime.StatusPaused) {
		// It survived, frozen in memory: nothing is lost and the caller
		// may try again, which is not an internal error.
		d.log.Warn("checkpoint failed; the sandbox stays paused in memory", "sandbox.id", id, "err", err)
		if strings.Contains(err.Error(), runscBoundSocket) {
			return errdefs.Wrap(errdefs.ErrFailedPrecondition, err,
				"sandbox %s cannot be saved to disk while a process in it listens on a unix socket in its filesystem "+
					"(gVisor cannot save those); it stays paused in memory: close the socket, or use a path under /tmp, "+
					"before pausing to disk", id)
		}
		return errdefs.Wrap(errdefs.ErrUnavailable, err,
			"sandbox %s could not be saved to disk just now; it stays paused in memory: try the pause to disk again, "+
				"or resume it", id)
	}
	d.log.Error("sandbox lost in a failed checkpoint", "sandbox.id", id, "err", err)
	if kerr := d.host.kill(context.WithoutCancel(ctx), id, ReasonCheckpointFailed); kerr != nil {
		d.log.Error("record sandbox lost in checkpoint", "sandbox.id", id, "err", kerr)
	}
	return fmt.Errorf("%w; the sandbox did not survive and was killed", err)
}

// runscBoundSocket is in runsc's error when the sandbox holds a unix
// socket bound on the host (a listener in its host-backed filesystem).
const runscBoundSocket = "Cannot save endpoint with bound host socket"

func (d *diskTier) checkpointLocked(ctx context.Context, id string) error {
	c, ok := d.driver.(runtime.Checkpointer)
	if !ok || !c.CanCheckpoint() {
		return errdefs.Precondition("the %s runtime cannot checkpoint sandboxes", d.driver.Name())
	}
	l := d.host.lookup(id)
	if l == nil {
		return errdefs.NotFound("sandbox %s not found", id)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sb.State != store.StatePaused {
		return errdefs.Precondition("sandbox %s is not paused", id)
	}
	if d.onDisk(ctx, id) {
		return errdefs.Conflict("sandbox %s is already paused to disk", id)
	}
	d.unschedule(id)
	spec, err := d.host.specFor(ctx, l.sb)
	if err != nil {
		return fmt.Errorf("checkpoint sandbox %s: %w", id, err)
	}
	dir := d.dir(id)
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
		if p, ok := d.driver.(runtime.Pauser); ok {
			if perr := p.Pause(context.WithoutCancel(ctx), id); perr != nil {
				d.log.Error("re-freeze after failed checkpoint", "sandbox.id", id, "err", perr)
			}
		}
		return fmt.Errorf("checkpoint sandbox %s: %w", id, err)
	}
	d.log.Info("sandbox paused to disk", "sandbox.id", id, "elapsed", time.Since(t0).Round(time.Millisecond),
		"image_bytes", dirSize(dir))
	return nil
}

// restore brings a disk-tier sandbox back running. Called with l.mu held.
func (d *diskTier) restore(ctx context.Context, l *live) error {
	c, ok := d.driver.(runtime.Checkpointer)
	if !ok {
		return errdefs.Precondition("the %s runtime cannot restore sandboxes", d.driver.Name())
	}
	id := l.sb.ID
	dir := d.dir(id)
	b, err := os.ReadFile(filepath.Join(dir, "spec.json"))
	if err != nil {
		return fmt.Errorf("restore sandbox %s: %w", id, err)
	}
	var spec runtime.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return fmt.Errorf("restore sandbox %s: parse %s/spec.json: %w", id, dir, err)
	}
	if spec.NetNS != "" { // saved by another server process, maybe
		if spec.NetNS, err = d.host.joinPath(id, spec.NetNS); err != nil {
			return fmt.Errorf("restore sandbox %s: %w", id, err)
		}
	}
	t0 := time.Now()
	if err := c.Restore(ctx, spec, filepath.Join(dir, "state")); err != nil {
		return fmt.Errorf("restore sandbox %s: %w", id, err)
	}
	tRestore := time.Since(t0)
	if err := l.agent.waitReady(ctx); err != nil {
		return fmt.Errorf("restore sandbox %s: agent: %w", id, err)
	}
	d.log.Info("sandbox restored from disk", "sandbox.id", id, "restore", tRestore.Round(time.Millisecond),
		"total", time.Since(t0).Round(time.Millisecond))
	if err := os.RemoveAll(dir); err != nil {
		d.log.Warn("remove used checkpoint", "sandbox.id", id, "err", err)
	}
	return nil
}

// checkpointPaused moves every memory-tier paused sandbox to disk (server
// shutdown with the disk tier enabled), so their memory is freed and they
// survive a reboot of the runtime's state.
func (d *diskTier) checkpointPaused(ctx context.Context) {
	d.mu.Lock()
	enabled := d.after > 0
	d.mu.Unlock()
	if !enabled || !d.canCheckpoint() {
		return
	}
	for _, sb := range d.host.Live() {
		if sb.State != store.StatePaused || d.onDisk(ctx, sb.ID) {
			continue
		}
		if err := d.checkpoint(ctx, sb.ID); err != nil {
			d.log.Warn("move paused sandbox to disk at shutdown; it stays frozen", "sandbox.id", sb.ID, "err", err)
		}
	}
}
