package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
)

// diskDriver is a pauseDriver that checkpoints: a checkpoint writes the
// dir and leaves the sandbox checkpointed, a restore runs it again.
type diskDriver struct {
	*pauseDriver
	checkpoints, restores atomic.Int32
}

var _ runtime.Checkpointer = (*diskDriver)(nil)

func (d *diskDriver) CanCheckpoint() bool { return true }

func (d *diskDriver) Checkpoint(_ context.Context, id, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	d.checkpoints.Add(1)
	d.set(id, runtime.StatusCheckpointed)
	return nil
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
