package sandbox

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/runtime/oci"
	"github.com/sbxdev/sbx/internal/runtime/runtimetest"
)

func newOCIDriver(t *testing.T, name, base string) *oci.Driver {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		runtimetest.Skip(t, name+" not on PATH: run scripts/install-deps.sh")
	}
	d, err := oci.New(oci.Config{Runtime: name, StateDir: filepath.Join(base, "runtime", name),
		SandboxDir: filepath.Join(base, "sandboxes-"+name)}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // runsc's gofer netns pin, see oci's tests
		for range 64 {
			if unix.Unmount(filepath.Join(base, "runtime", name, "null-netns"), unix.MNT_DETACH) != nil {
				return
			}
		}
	})
	return d
}

// TestRuntimesRouteBySandbox drives the router with real crun (the server's
// runtime) and runsc (the snapshot runtime): each call reaches the driver
// that runs the sandbox, also from a router that has never seen it (a
// restarted server), and List covers both.
func TestRuntimesRouteBySandbox(t *testing.T) {
	runtimetest.RequireRoot(t)
	base := t.TempDir()
	main, snap := newOCIDriver(t, "crun", base), newOCIDriver(t, "runsc", base)
	rootfs := runtimetest.BusyboxRootfs(t)
	r := newRuntimes(main)
	r.snap = snap
	ctx := t.Context()
	spec := func() runtime.Spec {
		return runtime.Spec{ID: runtimetest.NewID(t), Lower: []string{rootfs}, Args: []string{"/bin/sleep", "1000"}}
	}
	onMain, onSnap := spec(), spec()
	if err := r.Start(ctx, onMain); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = main.Delete(context.Background(), onMain.ID) })
	if err := r.startOnSnapshotRuntime(ctx, onSnap); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = snap.Delete(context.Background(), onSnap.ID) })

	restarted := newRuntimes(main)
	restarted.snap = snap
	for _, rt := range []*runtimes{r, restarted} {
		ids, err := rt.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(ids, onMain.ID) || !slices.Contains(ids, onSnap.ID) {
			t.Fatalf("List = %v, want both %s and %s", ids, onMain.ID, onSnap.ID)
		}
		for _, id := range []string{onMain.ID, onSnap.ID} {
			if st, err := rt.State(ctx, id); err != nil || st != runtime.StatusRunning {
				t.Fatalf("State(%s) = %q, %v", id, st, err)
			}
		}
	}
	if got := restarted.of(ctx, onSnap.ID); got != runtime.Driver(snap) {
		t.Fatalf("a fresh router routes the runsc sandbox to %s", got.Name())
	}
	// Pause and Resume reach the owner (a wrong driver would not find its
	// cgroup or would freeze nothing).
	if err := restarted.Pause(ctx, onSnap.ID); err != nil {
		t.Fatal(err)
	}
	if st, _ := snap.State(ctx, onSnap.ID); st != runtime.StatusPaused {
		t.Fatalf("runsc sandbox state after Pause through the router = %q", st)
	}
	if err := restarted.Resume(ctx, onSnap.ID); err != nil {
		t.Fatal(err)
	}
	// The server's runtime cannot checkpoint, the snapshot runtime can: the
	// router answers per sandbox.
	if err := restarted.Checkpoint(ctx, onMain.ID, filepath.Join(base, "ck-main")); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Checkpoint of the crun sandbox = %v, want a precondition error", err)
	}
	for _, s := range []runtime.Spec{onMain, onSnap} {
		if err := restarted.Delete(ctx, s.ID); err != nil {
			t.Fatalf("Delete(%s): %v", s.ID, err)
		}
		if _, err := r.State(ctx, s.ID); !errors.Is(err, runtime.ErrNotFound) {
			t.Errorf("State after Delete = %v, want not found", err)
		}
	}
	if err := restarted.Delete(ctx, "nosuchsandbox"); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Delete of an unknown sandbox = %v, want ErrNotFound", err)
	}
	_ = os.RemoveAll(filepath.Join(base, "ck-main"))
}
