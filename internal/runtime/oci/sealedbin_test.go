package oci

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/runtime/runtimetest"
)

// The crun driver runs crun from a sealed copy of its binary: no command
// can write to it, and crun, finding itself sealed, does not copy itself
// again (sealedbin.go).
func TestCrunRunsFromSealedCopy(t *testing.T) {
	requireRuntime(t, "crun")
	d := newTestDriver(t, "crun")
	if d.sealed == nil {
		t.Fatalf("crun driver runs from %s, not from a sealed memfd", d.bin)
	}
	if !strings.HasPrefix(d.bin, "/proc/self/fd/") {
		t.Fatalf("bin = %q, want /proc/self/fd/N", d.bin)
	}
	seals, err := unix.FcntlInt(d.sealed.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		t.Fatal(err)
	}
	if seals != sealsCrunChecks {
		t.Fatalf("seals = %#x, want %#x (crun copies itself again unless it finds exactly these)", seals, sealsCrunChecks)
	}
	if _, err := d.sealed.WriteAt([]byte("x"), 0); err == nil {
		t.Fatal("writing to the sealed crun succeeded")
	}
	path, _ := exec.LookPath("crun")
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want)+1)
	n, _ := d.sealed.ReadAt(got, 0)
	if !bytes.Equal(got[:n], want) {
		t.Fatalf("sealed copy differs from %s (%d bytes, want %d)", path, n, len(want))
	}
	// Through the driver's own command path, crun answers from the copy.
	out, err := d.command(context.Background(), "--version")
	if err != nil || !bytes.HasPrefix(out, []byte("crun version")) {
		t.Fatalf("crun --version from the sealed copy: %v: %s", err, out)
	}
}

// Only crun gets the copy: runc and runsc keep their own protections.
func TestRuncRunsFromFile(t *testing.T) {
	requireRuntime(t, "runc")
	d := newTestDriver(t, "runc")
	if d.sealed != nil || strings.HasPrefix(d.bin, "/proc/") {
		t.Fatalf("runc driver runs from %s", d.bin)
	}
}

// Delete removes a crun sandbox without running crun (forgetCrun): its
// processes die, and crun's state, its cgroups and its directory go, so
// crun no longer lists it and its ID can be used again.
func TestCrunDeleteWithoutExec(t *testing.T) {
	requireRuntime(t, "crun")
	d := newTestDriver(t, "crun")
	rootfs := runtimetest.BusyboxRootfs(t)
	id, _ := startIdle(t, d, rootfs, nil)
	pid, err := readPid(d.paths(id).pidFile())
	if err != nil {
		t.Fatal(err)
	}
	// A failed start or delete would run crun: make that impossible.
	d.bin = "/nonexistent/crun"
	if err := d.Delete(t.Context(), id); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := unix.Kill(pid, 0); err == nil {
		if st, err := procStartTime(pid); err == nil && st != 0 {
			t.Errorf("init %d still runs after Delete", pid)
		}
	}
	if _, err := os.Stat(filepath.Join(d.cfg.StateDir, id)); !os.IsNotExist(err) {
		t.Errorf("crun state dir of %s still there: %v", id, err)
	}
	for _, ctl := range []string{"pids", "memory", "freezer"} {
		if _, err := os.Stat(d.cgroupDir(ctl, id)); !os.IsNotExist(err) {
			t.Errorf("cgroup %s of %s still there: %v", ctl, id, err)
		}
	}
	if _, err := os.Stat(d.paths(id).dir); !os.IsNotExist(err) {
		t.Errorf("sandbox dir of %s still there: %v", id, err)
	}
	path, _ := exec.LookPath("crun")
	out, err := exec.Command(path, "--root", d.cfg.StateDir, "list", "-q").CombinedOutput()
	if err != nil || strings.Contains(string(out), id) {
		t.Errorf("crun list after Delete: %v: %s", err, out)
	}
}

// Both ways of making a user namespace give one that maps the range: a
// file of uid/gid 0 seen through an idmapped clone belongs to the range's
// first host ids. The stopped child leaves no process behind.
func TestUserNSMapsRange(t *testing.T) {
	runtimetest.RequireRoot(t)
	dir := runtimetest.Dir(t)
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := slotRange(idSlots - 1) // far from the ranges sandboxes take first
	for name, make := range map[string]func(idRange) (*os.File, error){"stopped": stoppedUserNS, "held": heldUserNS} {
		t.Run(name, func(t *testing.T) {
			before := childCount(t)
			ns, err := make(r)
			if err != nil {
				t.Fatal(err)
			}
			defer ns.Close()
			fd, err := idmapClone(dir, ns)
			if err != nil {
				t.Fatalf("idmapped clone: %v", err)
			}
			defer unix.Close(fd)
			var st unix.Stat_t
			if err := unix.Fstatat(fd, "f", &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				t.Fatal(err)
			}
			if st.Uid != r.UID || st.Gid != r.GID {
				t.Errorf("file of 0:0 shows as %d:%d through the namespace, want %d:%d", st.Uid, st.Gid, r.UID, r.GID)
			}
			if after := childCount(t); after > before {
				t.Errorf("%d child processes left behind", after-before)
			}
		})
	}
}

// childCount counts this process's children, zombies included.
func childCount(t *testing.T) int {
	t.Helper()
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	n := 0
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		n += len(strings.Fields(string(b)))
	}
	return n
}
