package oci

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/runtime/runtimetest"
)

// A server upgraded in place finds sandboxes started by the earlier build,
// whose dirs have the older layout: the overlay root at <dir>/rootfs, the
// sysfs at <dir>/sys, config.json in <dir>/bundle/ and a uid range in
// handle.json. Cleaning one up must unmount those and release its range;
// its host socket is still found.
func TestLegacyLayoutCleanup(t *testing.T) {
	runtimetest.RequireRoot(t)
	base := t.TempDir()
	d := &Driver{cfg: Config{SandboxDir: base}, ranges: &idRanges{dir: filepath.Join(base, "leases")}}
	p := d.paths("legacy1")
	for _, dir := range []string{p.upperMount(), p.legacyRootfs(), p.legacySysfs(), filepath.Dir(p.legacyConfig())} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range []string{p.upperMount(), p.legacyRootfs(), p.legacySysfs()} {
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	}
	ids, err := d.ranges.take(p.dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeHandle(p, handle{Runtime: "crun", IDs: &ids}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.legacyConfig(), []byte(`{"annotations":{"`+annotationHostSocket+`":"/run/x.sock"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := d.hostSocket("legacy1"); got != "/run/x.sock" {
		t.Errorf("hostSocket from bundle/config.json = %q; want /run/x.sock", got)
	}
	if err := d.removeDir("legacy1", p); err != nil {
		t.Fatalf("removeDir: %v", err)
	}
	if _, err := os.Stat(p.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sandbox dir still exists: %v", err)
	}
	if mounts, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mounts), p.dir) {
		t.Errorf("mounts under %s remain", p.dir)
	}
	if _, err := os.Stat(filepath.Join(d.ranges.dir, strconv.Itoa(ids.Slot))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("uid range lease of the legacy sandbox not released: %v", err)
	}
}

// handle.json is written once, when the sandbox runs: a start that fails
// before must still give its uid range back.
func TestFailedStartReleasesRange(t *testing.T) {
	requireRuntime(t, "crun")
	rootfs := runtimetest.BusyboxRootfs(t)
	leases := t.TempDir()
	d := newTestDriverWith(t, Config{Runtime: "crun", UserNS: true, IDLeaseDir: leases})
	id := runtimetest.NewID(t)
	err := d.Start(t.Context(), runtime.Spec{ID: id, Lower: []string{rootfs}, Args: []string{"/no/such/init"}})
	if err == nil {
		_ = d.Delete(t.Context(), id)
		t.Fatal("Start of a missing init succeeded")
	}
	if _, err := os.Stat(d.paths(id).dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sandbox dir left after a failed start: %v", err)
	}
	if left, _ := os.ReadDir(leases); len(left) != 0 {
		t.Errorf("uid range leases left after a failed start: %v", left)
	}
	d.ranges.mu.Lock()
	free := len(d.ranges.free)
	d.ranges.mu.Unlock()
	if free != 1 {
		t.Errorf("%d ranges back in the free list; want the failed start's one", free)
	}
}
