package datadir_test

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/datadir"
	"github.com/sbxdev/sbx/internal/errdefs"
)

func TestLockServer(t *testing.T) {
	dir := t.TempDir()
	a, err := datadir.LockServer(dir, "pid 1 listening on :3000")
	if err != nil {
		t.Fatal(err)
	}
	_, err = datadir.LockServer(dir, "pid 2 listening on :3001")
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "pid 1 listening on :3000") ||
		!strings.Contains(err.Error(), "--data-dir") {
		t.Fatalf("second server on one data dir: %v; want a refusal naming the holder and --data-dir", err)
	}
	// A child process does not inherit the lock: once the holder lets go
	// (or dies), the next server gets it although the child still runs.
	child := exec.Command("sleep", "30")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	b, err := datadir.LockServer(dir, "pid 3")
	if err != nil {
		t.Fatalf("after the holder released: %v", err)
	}
	defer b.Release()
	if got, _ := os.ReadFile(datadir.Layout{Root: dir}.ServeLock()); strings.TrimSpace(string(got)) != "pid 3" {
		t.Errorf("lock file names %q, want the new holder", got)
	}
}
