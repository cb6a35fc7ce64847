package sandbox

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
)

// diskDriver is a pauseDriver that checkpoints: a checkpoint writes the
// dir and leaves the sandbox checkpointed, a restore runs it again.
type diskDriver struct {
	*pauseDriver
	checkpoints, restores atomic.Int32
	// failWith, when set, fails every checkpoint; the sandbox is left
	// running (the driver thawed it) or, with dies, stopped.
	failWith error
	dies     bool
}

var _ runtime.Checkpointer = (*diskDriver)(nil)

func (d *diskDriver) CanCheckpoint() bool { return true }

func (d *diskDriver) Checkpoint(_ context.Context, id, dir string) error {
	if d.failWith != nil {
		if d.dies {
			d.set(id, runtime.StatusStopped)
		} else {
			d.set(id, runtime.StatusRunning)
		}
		return d.failWith
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	d.checkpoints.Add(1)
	d.set(id, runtime.StatusCheckpointed)
	return nil
}

// Pause cannot freeze a sandbox that is gone.
func (d *diskDriver) Pause(ctx context.Context, id string) error {
	if st, _ := d.State(ctx, id); st == runtime.StatusStopped {
		return errors.New("not running")
	}
	return d.pauseDriver.Pause(ctx, id)
}

func (d *diskDriver) Restore(_ context.Context, spec runtime.Spec, dir string) error {
	if _, err := os.Stat(dir); err != nil {
		return err
	}
	d.restores.Add(1)
	d.set(spec.ID, runtime.StatusRunning)
	return nil
}

// A paused sandbox moves to disk after the idle period and comes back
// from there on connect, its checkpoint then removed.
func TestDiskTierAfterIdle(t *testing.T) {
	t.Parallel()
	drv := &diskDriver{pauseDriver: &pauseDriver{exitDriver: newExitDriver()}}
	e := newLifecycleWith(t, drv, nil, WithPauseDiskAfter(time.Millisecond))
	sb, err := e.m.Create(t.Context(), CreateRequest{TeamID: "t1", Template: "base", Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.Pause(t.Context(), "t1", sb.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the move to disk", func() bool {
		tier, _ := e.m.PauseTier(t.Context(), "t1", sb.ID)
		return tier == TierDisk
	})
	if _, err := os.Stat(filepath.Join(e.data.Checkpoint(sb.ID), "spec.json")); err != nil {
		t.Fatalf("no checkpoint spec: %v", err)
	}
	got, resumed, err := e.m.Connect(t.Context(), "t1", sb.ID, time.Minute)
	if err != nil || !resumed || got.State != store.StateRunning {
		t.Fatalf("Connect = %s, resumed %v, %v; want running, resumed", got.State, resumed, err)
	}
	if drv.checkpoints.Load() != 1 || drv.restores.Load() != 1 {
		t.Errorf("%d checkpoints, %d restores; want one each", drv.checkpoints.Load(), drv.restores.Load())
	}
	if _, err := os.Stat(e.data.Checkpoint(sb.ID)); !os.IsNotExist(err) {
		t.Errorf("checkpoint left after the restore: %v", err)
	}
}

// A pause to disk whose checkpoint fails answers by what became of the
// sandbox: one that survived stays paused in memory and the client is told
// to try again (503, never 500), or why it cannot be saved (412: a
// tenant's socket); one that died is recorded killed.
func TestDiskTierCheckpointFails(t *testing.T) {
	t.Parallel()
	saveErr := errors.New("runsc checkpoint: exit status 128: checkpoint failed: encoding error: connection reset")
	socketErr := errors.New("runsc checkpoint: exit status 128: checkpoint failed: encoding error: " + runscBoundSocket + ":\ngoroutine 390")
	for _, tc := range []struct {
		name       string
		err        error
		dies       bool
		wantStatus int
		wantState  store.SandboxState
		wantTier   string
	}{
		{"survives", saveErr, false, http.StatusServiceUnavailable, store.StatePaused, TierMemory},
		{"tenant socket", socketErr, false, http.StatusPreconditionFailed, store.StatePaused, TierMemory},
		{"dies", saveErr, true, http.StatusInternalServerError, store.StateKilled, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			drv := &diskDriver{pauseDriver: &pauseDriver{exitDriver: newExitDriver()}, failWith: tc.err, dies: tc.dies}
			e := newLifecycleWith(t, drv, nil)
			sb, err := e.m.Create(t.Context(), CreateRequest{TeamID: "t1", Template: "base", Timeout: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			err = e.m.PauseTo(t.Context(), "t1", sb.ID, TierDisk)
			if got := errdefs.HTTPStatus(err); got != tc.wantStatus {
				t.Fatalf("PauseTo(disk) = %v (HTTP %d); want HTTP %d", err, got, tc.wantStatus)
			}
			got, gerr := e.m.Get(t.Context(), "t1", sb.ID)
			if gerr != nil || got.State != tc.wantState {
				t.Fatalf("Get = %s, %v; want %s", got.State, gerr, tc.wantState)
			}
			if tc.wantState == store.StateKilled {
				return
			}
			if tier, _ := e.m.PauseTier(t.Context(), "t1", sb.ID); tier != tc.wantTier {
				t.Errorf("tier %q; want %q", tier, tc.wantTier)
			}
			if st, _ := drv.State(t.Context(), sb.ID); st != runtime.StatusPaused {
				t.Errorf("driver state %s; want it frozen again", st)
			}
			if _, _, err := e.m.Connect(t.Context(), "t1", sb.ID, time.Minute); err != nil {
				t.Errorf("resume after the failed checkpoint: %v", err)
			}
		})
	}
}
