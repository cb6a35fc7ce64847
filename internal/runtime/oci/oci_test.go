package oci

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/runtime/runtimetest"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// requireRuntime skips when the runtime binary is missing, or fails with
// SBX_REQUIRE_INTEGRATION=1: scripts/install-deps.sh installs all three
// (runsc takes snapshots and the disk tier, so its tests must run in CI).
func requireRuntime(t *testing.T, name string) {
	t.Helper()
	runtimetest.RequireRoot(t)
	if _, err := exec.LookPath(name); err != nil {
		runtimetest.Skip(t, name+" not on PATH: run scripts/install-deps.sh")
	}
}

// newTestDriver makes a driver as `sbx serve` does: crun and runc with user
// namespaces (leased machine-wide, like every server's).
func newTestDriver(t testing.TB, name string) *Driver {
	t.Helper()
	return newTestDriverWith(t, Config{Runtime: name, UserNS: true})
}

func newTestDriverWith(t testing.TB, cfg Config) *Driver {
	t.Helper()
	name := cfg.Runtime
	base := runtimetest.Dir(t) // sandbox roots must reach their files
	cfg.StateDir, cfg.SandboxDir = base+"/state", base+"/sandboxes"
	d, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("New(%s): %v", name, err)
	}
	// runsc pins an empty network namespace for its gofers at
	// <root>/null-netns and keeps it (concurrent starts may stack several
	// mounts); unmount it so TempDir can go.
	t.Cleanup(func() {
		for range 64 {
			if unix.Unmount(filepath.Join(base, "state", "null-netns"), unix.MNT_DETACH) != nil {
				return
			}
		}
	})
	return d
}

func TestConformance(t *testing.T) {
	for _, name := range []string{"crun", "runc", "runsc"} {
		t.Run(name, func(t *testing.T) {
			requireRuntime(t, name)
			rootfs := runtimetest.BusyboxRootfs(t)
			runtimetest.Run(t, func(t *testing.T) runtime.Driver { return newTestDriver(t, name) }, rootfs)
		})
	}
	// --userns=false: everything but the user namespace must still hold.
	t.Run("crun-no-userns", func(t *testing.T) {
		requireRuntime(t, "crun")
		rootfs := runtimetest.BusyboxRootfs(t)
		runtimetest.Run(t, func(t *testing.T) runtime.Driver {
			return newTestDriverWith(t, Config{Runtime: "crun"})
		}, rootfs)
	})
}

func TestMain(m *testing.M) {
	os.Exit(m.Run())
}
