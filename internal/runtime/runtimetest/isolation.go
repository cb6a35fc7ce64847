package runtimetest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/runtime"
)

// testSyscallSurface runs syscalls the seccomp profile must refuse (and one
// it must allow, so the probe proves something) as root in a sandbox.
//
// A first sandbox runs before: a driver may reuse what it compiled for its
// first start (crun's seccomp filter), and later starts must hold as well.
func testSyscallSurface(t *testing.T, d runtime.Driver, rootfs string) {
	bin := buildProbe(t)
	start(t, d, rootfs, idle, nil).wait(t, "ready")
	sb := start(t, d, rootfs, `/helper/probe syscalls > /out/syscalls 2>&1; touch /out/done; sleep 1000`, func(s *runtime.Spec) {
		s.Mounts = append(s.Mounts, runtime.Mount{Source: bin, Target: "/helper", ReadOnly: true})
	})
	sb.wait(t, "done")
	got := map[string]string{}
	for _, line := range strings.Split(sb.read(t, "syscalls"), "\n") {
		if name, res, ok := strings.Cut(line, " "); ok {
			got[name] = res
		}
	}
	if got["socket(AF_INET)"] != "ok" {
		t.Fatalf("the probe cannot even open an AF_INET socket (%q); its other results prove nothing:\n%v", got["socket(AF_INET)"], got)
	}
	for _, name := range []string{"io_uring_setup", "socket(AF_VSOCK)", "personality(0xffffffff)",
		"personality(ADDR_NO_RANDOMIZE)", "unshare(CLONE_NEWUSER)", "socket(AF_PACKET)"} {
		if r, ok := got[name]; !ok || r == "ok" {
			t.Errorf("%s as root in a sandbox: %q; want it refused", name, r)
		}
	}
}

// capNetRaw is CAP_NET_RAW's bit in /proc/<pid>/status capability masks.
const capNetRaw = 13

// testCapabilities checks that root in a sandbox holds no CAP_NET_RAW (raw
// and packet sockets forge frames on a shared bridge), neither effective
// nor in its bounding set, so no program can gain it.
func testCapabilities(t *testing.T, d runtime.Driver, rootfs string) {
	sb := start(t, d, rootfs, `grep -E '^Cap(Eff|Bnd):' /proc/self/status > /out/caps; touch /out/done; sleep 1000`, nil)
	sb.wait(t, "done")
	caps := sb.read(t, "caps")
	n := 0
	for _, line := range strings.Split(caps, "\n") {
		name, hex, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
		if err != nil {
			t.Fatalf("parse %q: %v", line, err)
		}
		n++
		if mask&(1<<capNetRaw) != 0 {
			t.Errorf("root in a sandbox has CAP_NET_RAW in %s (%s)", name, strings.TrimSpace(hex))
		}
		if mask == 0 {
			t.Errorf("%s is empty: root in a sandbox cannot run apt or sudo", name)
		}
	}
	if n != 2 {
		t.Fatalf("want CapEff and CapBnd lines, got %q", caps)
	}
}

// testUserNamespace checks, for drivers that run sandboxes in user
// namespaces, that root inside is an unprivileged host user: what it
// writes into a bind mount belongs to the sandbox's host range, and a
// root-only host file mounted read-only stays unreadable to it.
func testUserNamespace(t *testing.T, d runtime.Driver, rootfs string) {
	m, ok := d.(runtime.IDMapper)
	if !ok {
		t.Skipf("%s does not implement runtime.IDMapper (no user namespaces)", d.Name())
	}
	secretDir := Dir(t)
	if err := os.WriteFile(filepath.Join(secretDir, "secret"), []byte("host only"), 0o600); err != nil {
		t.Fatal(err)
	}
	script := `cat /proc/self/uid_map > /out/uid_map; id -u > /out/uid;
touch /out/by-root; su user -c 'touch /out/by-user' 2>/out/su.err || touch /out/no-user;
cat /secret/secret > /out/secret 2>/dev/null; echo $? > /out/secret.rc; touch /out/done; sleep 1000`
	sb := start(t, d, rootfs, script, func(s *runtime.Spec) {
		s.Mounts = append(s.Mounts, runtime.Mount{Source: secretDir, Target: "/secret", ReadOnly: true})
	})
	sb.wait(t, "done")
	ids, ok, err := m.IDMap(t.Context(), sb.id)
	if err != nil {
		t.Fatalf("IDMap: %v", err)
	}
	if !ok {
		t.Skipf("%s runs sandboxes without user namespaces (its own kernel: gVisor)", d.Name())
	}
	if ids.UID == 0 || ids.GID == 0 || ids.Size < 65536 {
		t.Fatalf("IDMap = %+v; want an unprivileged range of at least 65536 ids", ids)
	}
	if got := sb.read(t, "uid"); got != "0" {
		t.Errorf("id -u inside = %s; want 0", got)
	}
	want := "0 " + strconv.FormatUint(uint64(ids.UID), 10) + " " + strconv.FormatUint(uint64(ids.Size), 10)
	if got := strings.Join(strings.Fields(sb.read(t, "uid_map")), " "); got != want {
		t.Errorf("/proc/self/uid_map inside = %q; want %q", got, want)
	}
	owner := func(name string) (uint32, uint32) {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(sb.out, name), &st); err != nil {
			t.Fatalf("stat /out/%s on the host: %v", name, err)
		}
		return st.Uid, st.Gid
	}
	if uid, gid := owner("by-root"); uid != ids.UID || gid != ids.GID {
		t.Errorf("a file root in the sandbox made belongs to %d:%d on the host; want %d:%d", uid, gid, ids.UID, ids.GID)
	}
	if _, err := os.Stat(filepath.Join(sb.out, "no-user")); err != nil {
		if uid, _ := owner("by-user"); uid != ids.UID+1000 {
			t.Errorf("a file uid 1000 made belongs to host uid %d; want %d", uid, ids.UID+1000)
		}
	}
	if rc := sb.read(t, "secret.rc"); rc == "0" || sb.read(t, "secret") != "" {
		t.Errorf("root in the sandbox read a host file only host root may read")
	}
	// Two live sandboxes never share a range.
	other := start(t, d, rootfs, idle, nil)
	other.wait(t, "ready")
	if ids2, _, err := m.IDMap(t.Context(), other.id); err != nil || ids2.UID == ids.UID ||
		ids2.UID < ids.UID+ids.Size && ids.UID < ids2.UID+ids2.Size {
		t.Errorf("two live sandboxes got overlapping ranges %+v and %+v (%v)", ids, ids2, err)
	}
}

// testExitReported checks that the driver reports an init that exits on its
// own, with its exit code, also when asked after the fact.
func testExitReported(t *testing.T, d runtime.Driver, rootfs string) {
	w, ok := d.(runtime.ExitWatcher)
	if !ok {
		t.Skipf("%s does not implement runtime.ExitWatcher", d.Name())
	}
	if _, err := w.Wait(t.Context(), NewID(t)); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Wait(unknown) = %v; want ErrNotFound", err)
	}
	sb := start(t, d, rootfs, `touch /out/ready; while [ ! -e /out/go ]; do usleep 10000; done; exit 3`, nil)
	sb.wait(t, "ready")
	// A cancelled wait returns while the init runs.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if ex, err := w.Wait(ctx, sb.id); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with an expiring context on a running sandbox = %+v, %v; want DeadlineExceeded", ex, err)
	}
	done := make(chan struct{})
	var ex runtime.Exit
	var err error
	go func() { defer close(done); ex, err = w.Wait(t.Context(), sb.id) }()
	time.Sleep(20 * time.Millisecond)
	select {
	case <-done:
		t.Fatalf("Wait returned %+v, %v while the init still runs", ex, err)
	default:
	}
	if err := os.WriteFile(filepath.Join(sb.out, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Wait did not return after the init exited")
	}
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if ex.Reason != runtime.ExitExited || ex.Code != 3 && ex.Code != -1 {
		t.Errorf("Wait = %+v; want reason %q, code 3 (or -1 where the kernel cannot tell)", ex, runtime.ExitExited)
	}
	// Asked again, after the fact: the same answer at once.
	ctx2, cancel2 := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel2()
	if ex2, err := w.Wait(ctx2, sb.id); err != nil || ex2.Reason != runtime.ExitExited {
		t.Errorf("second Wait = %+v, %v; want reason %q at once", ex2, err, runtime.ExitExited)
	}
	if err := d.Delete(t.Context(), sb.id); err != nil {
		t.Fatalf("Delete after exit: %v", err)
	}
}

// testExitOOM fills a sandbox's writable layer (tmpfs, charged to its
// memory) and then its memory until the OOM killer ends its init: the
// driver must say oom.
func testExitOOM(t *testing.T, d runtime.Driver, rootfs string) {
	w, ok := d.(runtime.ExitWatcher)
	if !ok {
		t.Skipf("%s does not implement runtime.ExitWatcher", d.Name())
	}
	// /root, not /tmp: runsc mounts its own tmpfs on an empty /tmp.
	// The filling waits for /out/go: an OOM before Start had read the
	// init's start time failed Start ("exited right after start").
	hog := `touch /out/ready; while [ ! -e /out/go ]; do sleep 0.05; done; dd if=/dev/zero of=/root/fill bs=1M count=96 2>/dev/null; x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done`
	sb := start(t, d, rootfs, hog, func(s *runtime.Spec) {
		// Room for runsc's Sentry and gofer to start (they share the
		// cgroup): at 48 MiB they sometimes died before the init ran.
		s.Resources.MemoryMB = 128
		s.Resources.DiskMB = 256
	})
	sb.wait(t, "ready")
	if err := os.WriteFile(filepath.Join(sb.out, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	ex, err := w.Wait(ctx, sb.id)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if ex.Reason != runtime.ExitOOM {
		t.Errorf("Wait = %+v; want reason %q", ex, runtime.ExitOOM)
	}
	hostStillWorks(t)
}
