package oci

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/runtime/runtimetest"
)

// readCount waits until the sandbox's counter file holds a number above min.
func readCount(t *testing.T, path string, min int) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > min {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter in %s never went above %d (last %q)", path, min, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCheckpointRestore(t *testing.T) {
	requireRuntime(t, "runsc")
	d := newTestDriver(t, "runsc")
	if dbg := os.Getenv("SBX_RUNSC_DEBUG"); dbg != "" {
		d.global = append(d.global, "--debug", "--debug-log="+dbg)
	}
	rootfs := runtimetest.BusyboxRootfs(t)
	// The counter lives in the shell's memory; only its value is written to
	// the host. A file written into the root tests the writable layer.
	var spec runtime.Spec // runsc wants the very same spec at restore
	id, out := startIdle(t, d, rootfs, func(s *runtime.Spec) {
		s.Args = []string{"/bin/sh", "-c", "echo kept > /data; touch /out/ready; i=0; while true; do i=$((i+1)); echo $i > /out/count; sleep 0.05; done"}
		spec = *s
	})
	before := readCount(t, filepath.Join(out, "count"), 3)
	if err := d.Pause(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "ckpt")
	if err := d.Checkpoint(t.Context(), id, dir); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	if st, err := d.State(t.Context(), id); err != nil || st != runtime.StatusCheckpointed {
		t.Fatalf("State after checkpoint = %q, %v; want checkpointed", st, err)
	}
	p := d.paths(id)
	if isMountpoint(p.upperMount()) {
		t.Errorf("writable layer tmpfs still mounted after checkpoint: its memory is not freed")
	}
	if b, err := os.ReadFile(filepath.Join(dir, ckptUpper, "data")); err != nil || string(b) != "kept\n" {
		t.Errorf("checkpoint's copy of /data = %q, %v; want \"kept\\n\"", b, err)
	}
	stopped := readCount(t, filepath.Join(out, "count"), 0)
	// A restore that fails (runsc refuses another spec) leaves the sandbox
	// checkpointed and the checkpoint usable.
	bad := spec
	bad.Args = []string{"/bin/sh", "-c", "exit 0"}
	if err := d.Restore(t.Context(), bad, dir); err == nil {
		t.Fatal("Restore with a different spec succeeded; want runsc's refusal")
	}
	if st, err := d.State(t.Context(), id); err != nil || st != runtime.StatusCheckpointed {
		t.Fatalf("State after a failed restore = %q, %v; want checkpointed", st, err)
	}
	if isMountpoint(p.upperMount()) {
		t.Errorf("failed restore left the writable layer mounted")
	}
	// Restore twice from the same image: the checkpoint dir is reusable.
	for round := range 2 {
		if err := d.Restore(t.Context(), spec, dir); err != nil {
			t.Fatalf("Restore %d: %v", round, err)
		}
		if st, err := d.State(t.Context(), id); err != nil || st != runtime.StatusRunning {
			t.Fatalf("State after restore = %q, %v; want running", st, err)
		}
		got := readCount(t, filepath.Join(out, "count"), stopped)
		if got < before {
			t.Fatalf("counter after restore = %d, below %d before: memory state lost", got, before)
		}
		if b, err := os.ReadFile(filepath.Join(p.upper(), "data")); err != nil || string(b) != "kept\n" {
			t.Errorf("/data after restore = %q, %v", b, err)
		}
		if round == 0 {
			if err := d.Restore(t.Context(), spec, dir); !errors.Is(err, errdefs.ErrAlreadyExists) {
				t.Errorf("Restore of a running sandbox = %v; want already exists", err)
			}
			if err := d.Delete(t.Context(), id); err != nil {
				t.Fatal(err)
			}
			os.Remove(filepath.Join(out, "count"))
			stopped = 0
		}
	}
}

func TestCheckpointUnsupported(t *testing.T) {
	requireRuntime(t, "crun")
	d := newTestDriver(t, "crun")
	if d.CanCheckpoint() {
		t.Fatal("crun reports it can checkpoint")
	}
	err := d.Checkpoint(t.Context(), "abc", t.TempDir()+"/x")
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "runsc") {
		t.Errorf("Checkpoint under crun = %v; want a precondition error naming runsc", err)
	}
}
