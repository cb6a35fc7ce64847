// Package runtimetest is the conformance suite every runtime.Driver runs.
//
// Sandboxes in the suite run busybox shell scripts as their init process and
// report what they observed through a bind-mounted host directory at /out,
// so the suite needs nothing from the driver beyond the runtime.Driver
// contract (no exec, no network).
package runtimetest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/runtime"
)

// Run runs the conformance suite against drivers made by newDriver. rootfs
// is a root filesystem with a POSIX shell and busybox-style tools (see
// BusyboxRootfs).
func Run(t *testing.T, newDriver func(t *testing.T) runtime.Driver, rootfs string) {
	t.Run("Lifecycle", func(t *testing.T) { t.Parallel(); testLifecycle(t, newDriver(t), rootfs) })
	t.Run("InvalidSpec", func(t *testing.T) { t.Parallel(); testInvalidSpec(t, newDriver(t), rootfs) })
	t.Run("DeleteUnknown", func(t *testing.T) { t.Parallel(); testDeleteUnknown(t, newDriver(t)) })
	t.Run("InitExits", func(t *testing.T) { t.Parallel(); testInitExits(t, newDriver(t), rootfs) })
	t.Run("ProcessSpec", func(t *testing.T) { t.Parallel(); testProcessSpec(t, newDriver(t), rootfs) })
	t.Run("Mounts", func(t *testing.T) { t.Parallel(); testMounts(t, newDriver(t), rootfs) })
	t.Run("PIDIsolation", func(t *testing.T) { t.Parallel(); testPIDIsolation(t, newDriver(t), rootfs) })
	t.Run("HostFileIsolation", func(t *testing.T) { t.Parallel(); testHostFileIsolation(t, newDriver(t), rootfs) })
	t.Run("SiblingIsolation", func(t *testing.T) { t.Parallel(); testSiblingIsolation(t, newDriver(t), rootfs) })
	t.Run("NoNetworkByDefault", func(t *testing.T) { t.Parallel(); testNoNetwork(t, newDriver(t), rootfs) })
	t.Run("Seccomp", func(t *testing.T) { t.Parallel(); testSeccomp(t, newDriver(t), rootfs) })
	t.Run("DiskLimit", func(t *testing.T) { t.Parallel(); testDiskLimit(t, newDriver(t), rootfs) })
	t.Run("PidsLimit", func(t *testing.T) { t.Parallel(); testPidsLimit(t, newDriver(t), rootfs) })
	t.Run("MemoryLimit", func(t *testing.T) { t.Parallel(); testMemoryLimit(t, newDriver(t), rootfs) })
	t.Run("PauseResume", func(t *testing.T) { t.Parallel(); testPauseResume(t, newDriver(t), rootfs) })
	t.Run("Concurrent", func(t *testing.T) { t.Parallel(); testConcurrent(t, newDriver(t), rootfs) })
	t.Run("UnixSocketToHost", func(t *testing.T) { t.Parallel(); testUnixSocketToHost(t, newDriver(t), rootfs) })
	t.Run("SyscallSurface", func(t *testing.T) { t.Parallel(); testSyscallSurface(t, newDriver(t), rootfs) })
	t.Run("Capabilities", func(t *testing.T) { t.Parallel(); testCapabilities(t, newDriver(t), rootfs) })
	t.Run("UserNamespace", func(t *testing.T) { t.Parallel(); testUserNamespace(t, newDriver(t), rootfs) })
	t.Run("ExitReported", func(t *testing.T) { t.Parallel(); testExitReported(t, newDriver(t), rootfs) })
	t.Run("ExitOOM", func(t *testing.T) { t.Parallel(); testExitOOM(t, newDriver(t), rootfs) })
}

// NewID returns a fresh fixed-width sandbox ID (runsc matches ID prefixes).
func NewID(t testing.TB) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "t" + hex.EncodeToString(b)[:15]
}

// sandbox is a started sandbox and the host side of its /out directory.
type sandbox struct {
	id  string
	out string
}

// start starts a sandbox whose init runs script under /bin/sh with /out
// bind-mounted; edit may change the spec before the start.
func start(t *testing.T, d runtime.Driver, rootfs, script string, edit func(*runtime.Spec)) sandbox {
	t.Helper()
	sb := sandbox{id: NewID(t), out: Dir(t)}
	spec := runtime.Spec{
		ID:     sb.id,
		Lower:  []string{rootfs},
		Args:   []string{"/bin/sh", "-c", script},
		Env:    []string{"PATH=/bin:/sbin:/usr/bin:/usr/sbin", "HOME=/root"},
		Mounts: []runtime.Mount{{Source: sb.out, Target: "/out", Owned: true}},
	}
	if edit != nil {
		edit(&spec)
	}
	if err := d.Start(t.Context(), spec); err != nil {
		t.Fatalf("Start(%s): %v", sb.id, err)
	}
	t.Cleanup(func() {
		if err := d.Delete(context.Background(), sb.id); err != nil && !errors.Is(err, runtime.ErrNotFound) {
			t.Errorf("cleanup Delete(%s): %v", sb.id, err)
		}
	})
	return sb
}

// wait polls until name exists in the sandbox's /out and returns its content.
// Scripts write results first and then `touch /out/<name>`-style markers.
func (sb sandbox) wait(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(sb.out, name)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(p); err == nil {
			return strings.TrimSpace(string(b))
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox %s never wrote /out/%s (files: %v)", sb.id, name, listDir(sb.out))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (sb sandbox) read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(sb.out, name))
	if err != nil {
		t.Fatalf("sandbox %s: read /out/%s: %v", sb.id, name, err)
	}
	return strings.TrimSpace(string(b))
}

func listDir(dir string) []string {
	es, _ := os.ReadDir(dir)
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func waitState(t *testing.T, d runtime.Driver, id string, want runtime.Status) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := d.State(t.Context(), id)
		if err == nil && st == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("State(%s) = %q, %v; want %q", id, st, err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hostStillWorks fails the test if the host can no longer start a process.
func hostStillWorks(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("/bin/sh", "-c", "echo ok").Output(); err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("host cannot run a process any more: %q, %v", out, err)
	}
}

const idle = "touch /out/ready; while :; do sleep 1; done"

func testLifecycle(t *testing.T, d runtime.Driver, rootfs string) {
	sb := start(t, d, rootfs, idle, nil)
	sb.wait(t, "ready")
	ctx := t.Context()
	if st, err := d.State(ctx, sb.id); err != nil || st != runtime.StatusRunning {
		t.Fatalf("State = %q, %v; want running", st, err)
	}
	ids, err := d.List(ctx)
	if err != nil || !slices.Contains(ids, sb.id) {
		t.Fatalf("List = %v, %v; want it to contain %s", ids, err, sb.id)
	}
	st, err := d.Stats(ctx, sb.id)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.Pids < 1 || st.MemoryBytes == 0 {
		t.Errorf("Stats = %+v; want at least one task and some memory", st)
	}
	if err := d.Start(ctx, runtime.Spec{ID: sb.id, Lower: []string{rootfs}, Args: []string{"/bin/true"}}); err == nil {
		t.Errorf("starting a second sandbox with ID %s succeeded; want an error", sb.id)
	}
	if err := d.Delete(ctx, sb.id); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := d.State(ctx, sb.id); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("State after Delete: %v; want ErrNotFound", err)
	}
	if ids, _ := d.List(ctx); slices.Contains(ids, sb.id) {
		t.Errorf("List after Delete still has %s", sb.id)
	}
	if err := d.Delete(ctx, sb.id); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("second Delete: %v; want ErrNotFound", err)
	}
}

func testInvalidSpec(t *testing.T, d runtime.Driver, rootfs string) {
	good := func() runtime.Spec {
		return runtime.Spec{ID: NewID(t), Lower: []string{rootfs}, Args: []string{"/bin/true"}}
	}
	tests := []struct {
		name string
		edit func(*runtime.Spec)
	}{
		{"path in ID", func(s *runtime.Spec) { s.ID = "../etc" }},
		{"upper case ID", func(s *runtime.Spec) { s.ID = "ABC" }},
		{"empty ID", func(s *runtime.Spec) { s.ID = "" }},
		{"no layers", func(s *runtime.Spec) { s.Lower = nil }},
		{"missing layer", func(s *runtime.Spec) { s.Lower = []string{filepath.Join(rootfs, "nope")} }},
		{"no args", func(s *runtime.Spec) { s.Args = nil }},
		{"missing mount source", func(s *runtime.Spec) {
			s.Mounts = []runtime.Mount{{Source: "/nonexistent/sbx-test", Target: "/x"}}
		}},
	}
	for _, tc := range tests {
		s := good()
		tc.edit(&s)
		if err := d.Start(t.Context(), s); err == nil {
			_ = d.Delete(context.Background(), s.ID)
			t.Errorf("%s: Start succeeded; want an error", tc.name)
		} else if errors.Is(err, runtime.ErrNotFound) {
			t.Errorf("%s: Start error %v should not be ErrNotFound", tc.name, err)
		}
	}
}

func testDeleteUnknown(t *testing.T, d runtime.Driver) {
	id := NewID(t)
	if err := d.Delete(t.Context(), id); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Delete(unknown) = %v; want ErrNotFound", err)
	}
	if _, err := d.State(t.Context(), id); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("State(unknown) = %v; want ErrNotFound", err)
	}
	if _, err := d.Stats(t.Context(), id); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Stats(unknown) = %v; want ErrNotFound", err)
	}
}

func testInitExits(t *testing.T, d runtime.Driver, rootfs string) {
	sb := start(t, d, rootfs, "touch /out/ready; sleep 0.2", nil)
	sb.wait(t, "ready")
	waitState(t, d, sb.id, runtime.StatusStopped)
	if err := d.Delete(t.Context(), sb.id); err != nil {
		t.Fatalf("Delete of a stopped sandbox: %v", err)
	}
}

func testProcessSpec(t *testing.T, d runtime.Driver, rootfs string) {
	script := `hostname > /out/hostname; echo "$SBX_TEST" > /out/env; pwd > /out/cwd;
id -u > /out/uid; ulimit -n > /out/nofile; touch /out/done; sleep 1000`
	sb := start(t, d, rootfs, script, func(s *runtime.Spec) {
		s.Hostname = "box-" + s.ID[:6]
		s.Env = append(s.Env, "SBX_TEST=hello world")
		s.Cwd = "/tmp"
	})
	sb.wait(t, "done")
	// 1048576 open files, unless this host does not let root raise its own
	// hard limit that far (then the driver passes on what it has).
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"hostname": "box-" + sb.id[:6], "env": "hello world", "cwd": "/tmp", "uid": "0",
		"nofile": strconv.FormatUint(min(lim.Max, 1048576), 10),
	}
	for file, w := range want {
		if got := sb.read(t, file); got != w {
			t.Errorf("/out/%s = %q; want %q", file, got, w)
		}
	}
}

func testMounts(t *testing.T, d runtime.Driver, rootfs string) {
	ro := Dir(t)
	if err := os.WriteFile(filepath.Join(ro, "in"), []byte("from host"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `cat /ro/in > /out/in; echo x > /ro/new 2>/dev/null; echo $? > /out/rowrite;
echo data > /etc/newfile && cat /etc/newfile > /out/rootwrite; grep -c localhost /etc/hosts > /out/hosts; touch /out/done; sleep 1000`
	sb := start(t, d, rootfs, script, func(s *runtime.Spec) {
		s.Mounts = append(s.Mounts, runtime.Mount{Source: ro, Target: "/ro", ReadOnly: true})
	})
	sb.wait(t, "done")
	if got := sb.read(t, "in"); got != "from host" {
		t.Errorf("read-only bind mount content = %q; want %q", got, "from host")
	}
	if got := sb.read(t, "rowrite"); got == "0" {
		t.Errorf("writing into a read-only mount succeeded")
	}
	if _, err := os.Stat(filepath.Join(ro, "new")); err == nil {
		t.Errorf("file written through a read-only mount appeared on the host")
	}
	if got := sb.read(t, "rootwrite"); got != "data" {
		t.Errorf("root filesystem is not writable: got %q", got)
	}
	if _, err := os.Stat(filepath.Join(rootfs, "etc", "newfile")); err == nil {
		t.Errorf("a write to the sandbox root changed the template layer")
	}
	if got := sb.read(t, "hosts"); got == "0" || got == "" {
		t.Errorf("/etc/hosts has no localhost entry")
	}
}

// dumpCmdlines writes the command line of every process the sandbox can see.
const dumpCmdlines = `for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' < $f; echo; done > /out/cmdlines`

func testPIDIsolation(t *testing.T, d runtime.Driver, rootfs string) {
	sb := start(t, d, rootfs, `echo $$ > /out/self; `+dumpCmdlines+`; touch /out/done; sleep 1000`, nil)
	sb.wait(t, "done")
	if got := sb.read(t, "self"); got != "1" {
		t.Errorf("init's PID inside = %s; want 1", got)
	}
	cmdlines := sb.read(t, "cmdlines")
	if !strings.Contains(cmdlines, "/bin/sh -c") {
		t.Fatalf("sandbox does not even see its own init; cmdlines:\n%.1000s", cmdlines)
	}
	// The test binary is a host process that is certainly running.
	if strings.Contains(cmdlines, os.Args[0]) {
		t.Errorf("sandbox sees the host's test process %s", os.Args[0])
	}
	if n := strings.Count(cmdlines, "\n") + 1; n > 5 {
		t.Errorf("sandbox sees %d processes; want only its own few:\n%.1000s", n, cmdlines)
	}
}

func testHostFileIsolation(t *testing.T, d runtime.Driver, rootfs string) {
	secret := NewID(t)
	marker := filepath.Join(t.TempDir(), "host-marker")
	if err := os.WriteFile(marker, []byte(secret), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `cat ` + marker + ` > /out/marker 2>/dev/null; echo $? > /out/rc;
grep -rs ` + secret + ` /etc /tmp /root /run > /out/grep; touch /out/done; sleep 1000`
	sb := start(t, d, rootfs, script, nil)
	sb.wait(t, "done")
	if rc := sb.read(t, "rc"); rc == "0" {
		t.Errorf("sandbox read the host file %s (rc 0)", marker)
	}
	for _, f := range []string{"marker", "grep"} {
		if strings.Contains(sb.read(t, f), secret) {
			t.Errorf("host secret leaked into the sandbox via %s", f)
		}
	}
}

func testSiblingIsolation(t *testing.T, d runtime.Driver, rootfs string) {
	secret := NewID(t)
	// A unique sleep duration marks A's process in every /proc listing.
	marker := "sleep " + strconv.Itoa(100000+int(secret[1])*1000+len(t.Name()))
	a := start(t, d, rootfs, `echo `+secret+` > /tmp/a-secret; `+marker+` & `+dumpCmdlines+`; touch /out/ready; wait`, nil)
	a.wait(t, "ready")
	if !strings.Contains(a.read(t, "cmdlines"), marker) {
		t.Fatalf("sandbox %s does not see its own %q; the check below would prove nothing", a.id, marker)
	}
	b := start(t, d, rootfs, `cat /tmp/a-secret > /out/cat 2>/dev/null; echo $? > /out/rc; `+
		dumpCmdlines+`; touch /out/done; sleep 1000`, nil)
	b.wait(t, "done")
	if rc := b.read(t, "rc"); rc == "0" || strings.Contains(b.read(t, "cat"), secret) {
		t.Errorf("sandbox %s read sandbox %s's /tmp/a-secret", b.id, a.id)
	}
	if cmdlines := b.read(t, "cmdlines"); strings.Contains(cmdlines, marker) {
		t.Errorf("sandbox %s sees sandbox %s's process %q", b.id, a.id, marker)
	}
}

func testNoNetwork(t *testing.T, d runtime.Driver, rootfs string) {
	sb := start(t, d, rootfs, `ls /sys/class/net > /out/ifaces; cat /proc/net/dev > /out/dev; touch /out/done; sleep 1000`, nil)
	sb.wait(t, "done")
	var ifaces []string
	for _, line := range strings.Split(sb.read(t, "dev"), "\n") {
		if name, _, ok := strings.Cut(line, ":"); ok {
			ifaces = append(ifaces, strings.TrimSpace(name))
		}
	}
	// No interface at all is fine too (runsc lists none for a fresh namespace).
	for _, name := range ifaces {
		if name != "lo" && !strings.HasPrefix(name, "sit") && !strings.HasPrefix(name, "tunl") && !strings.HasPrefix(name, "ip6tnl") {
			t.Errorf("sandbox without NetNS has interface %q; want loopback only", name)
		}
	}
}

func testSeccomp(t *testing.T, d runtime.Driver, rootfs string) {
	script := `unshare -U true 2>/out/unshare.err; echo $? > /out/unshare;
mkdir -p /mnt/x; mount -t tmpfs none /mnt/x 2>/out/mount.err; echo $? > /out/mount;
touch /out/done; sleep 1000`
	sb := start(t, d, rootfs, script, nil)
	sb.wait(t, "done")
	for _, name := range []string{"unshare", "mount"} {
		if rc := sb.read(t, name); rc == "0" {
			t.Errorf("%s succeeded inside the sandbox; want it refused", name)
		}
	}
}

func testDiskLimit(t *testing.T, d runtime.Driver, rootfs string) {
	// /root, not /tmp: runsc mounts its own tmpfs on an empty /tmp.
	script := `dd if=/dev/zero of=/root/small bs=1M count=4 2>/dev/null; echo $? > /out/small;
dd if=/dev/zero of=/root/big bs=1M count=64 2>/out/big.err; echo $? > /out/big; rm -f /root/big;
dd if=/dev/zero of=/etc/hosts bs=1M count=64 2>/dev/null; echo $? > /out/hosts; : > /etc/hosts;
touch /out/done; sleep 1000`
	sb := start(t, d, rootfs, script, func(s *runtime.Spec) { s.Resources.DiskMB = 16 })
	sb.wait(t, "done")
	if rc := sb.read(t, "small"); rc != "0" {
		t.Errorf("writing 4 MiB into a 16 MiB sandbox failed: rc %s", rc)
	}
	if rc := sb.read(t, "big"); rc == "0" {
		t.Errorf("writing 64 MiB into a 16 MiB sandbox succeeded; want no space left")
	}
	// /etc/hosts is a file the host writes and binds in: it must count
	// against the sandbox's disk, not fill the host's.
	if rc := sb.read(t, "hosts"); rc == "0" {
		t.Errorf("writing 64 MiB into /etc/hosts of a 16 MiB sandbox succeeded; want no space left")
	}
	st, err := d.Stats(t.Context(), sb.id)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.DiskBytes < 4<<20 || st.DiskBytes > 16<<20 {
		t.Errorf("Stats.DiskBytes = %d; want between 4 MiB (written) and 16 MiB (limit)", st.DiskBytes)
	}
}

func testPidsLimit(t *testing.T, d runtime.Driver, rootfs string) {
	const limit = 64
	// Every process keeps forking copies of itself: the population doubles
	// every 10 ms until the limit, then keeps pressing against it (a shell
	// whose fork fails exits, freeing a slot for another). The init reports
	// before the bomb starts and then becomes sleep, which never forks.
	// The bomb waits for /out/go: under runsc it can take the whole sandbox
	// (the sentry cannot make host threads), and one that ran at once could
	// end it before Start had seen its init running.
	bomb := `touch /out/started; while [ ! -e /out/go ]; do usleep 10000; done; b() { while :; do b & usleep 10000; done; }; (b) 2>/dev/null & exec sleep 100000`
	sb := start(t, d, rootfs, bomb, func(s *runtime.Spec) { s.Resources.PidsMax = limit })
	sb.wait(t, "started")
	if err := os.WriteFile(filepath.Join(sb.out, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Contained means: the sandbox's tasks stay within the limit, and either
	// the bomb runs into it, or the runtime gives up on the sandbox (runsc's
	// sentry cannot create host threads any more and exits). Either way the
	// host keeps working and the sandbox can be deleted.
	var st runtime.Stats
	deadline := time.Now().Add(20 * time.Second)
	for {
		var err error
		if st, err = d.Stats(t.Context(), sb.id); err != nil {
			t.Fatalf("Stats: %v", err)
		}
		if st.Pids > limit {
			t.Fatalf("sandbox has %d tasks; limit is %d", st.Pids, limit)
		}
		if st.Pids >= limit-2 {
			break
		}
		if s, err := d.State(t.Context(), sb.id); err == nil && s == runtime.StatusStopped {
			t.Logf("%s stopped the fork-bombed sandbox at %d tasks", d.Name(), st.Pids)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fork bomb reached only %d tasks and the sandbox still runs; want it to hit the limit %d", st.Pids, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	hostStillWorks(t)
	if err := d.Delete(t.Context(), sb.id); err != nil {
		t.Fatalf("Delete of a fork-bombing sandbox: %v", err)
	}
}

func testMemoryLimit(t *testing.T, d runtime.Driver, rootfs string) {
	other := start(t, d, rootfs, idle, func(s *runtime.Spec) { s.Resources.MemoryMB = 64 })
	// The hog waits for /out/go: under runsc an OOM takes the whole
	// sandbox, and a hog that ran at once could kill it before Start had
	// seen its init running.
	hog := `while [ ! -e /out/go ]; do sleep 0.02; done; (x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done); echo $? > /out/hog; touch /out/done; sleep 1000`
	sb := start(t, d, rootfs, hog, func(s *runtime.Spec) { s.Resources.MemoryMB = 64 })
	st, err := d.Stats(t.Context(), sb.id)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.MemoryLimit != 64<<20 {
		t.Errorf("Stats.MemoryLimit = %d; want %d", st.MemoryLimit, 64<<20)
	}
	if err := os.WriteFile(filepath.Join(sb.out, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Contained means: the OOM killer kills the hog inside the sandbox (the
	// init survives), or, where the whole sandbox is one host process
	// (runsc's sentry), the sandbox dies. Never the host or a neighbour.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(sb.out, "done")); err == nil {
			if rc := sb.read(t, "hog"); rc != "137" {
				t.Errorf("memory hog exit status = %s; want 137 (killed by the OOM killer)", rc)
			}
			if s, err := d.State(t.Context(), sb.id); err != nil || s != runtime.StatusRunning {
				t.Errorf("sandbox after OOM kill inside: %q, %v; want its init still running", s, err)
			}
			break
		}
		if s, err := d.State(t.Context(), sb.id); err == nil && s == runtime.StatusStopped {
			t.Logf("%s stopped the whole sandbox on OOM", d.Name())
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("memory hog in sandbox %s was neither killed nor stopped", sb.id)
		}
		time.Sleep(10 * time.Millisecond)
	}
	other.wait(t, "ready")
	if s, err := d.State(t.Context(), other.id); err != nil || s != runtime.StatusRunning {
		t.Errorf("neighbour sandbox: %q, %v; want running", s, err)
	}
	hostStillWorks(t)
}

func testPauseResume(t *testing.T, d runtime.Driver, rootfs string) {
	p, ok := d.(runtime.Pauser)
	if !ok {
		t.Skipf("%s does not implement runtime.Pauser", d.Name())
	}
	sb := start(t, d, rootfs, `i=0; while :; do i=$((i+1)); echo $i > /out/tick.tmp; mv /out/tick.tmp /out/tick; usleep 5000; done`, nil)
	sb.wait(t, "tick")
	ctx := t.Context()
	if err := p.Pause(ctx, sb.id); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if st, err := d.State(ctx, sb.id); err != nil || st != runtime.StatusPaused {
		t.Fatalf("State after Pause = %q, %v; want paused", st, err)
	}
	before := sb.read(t, "tick")
	time.Sleep(100 * time.Millisecond) // 20 ticks if it were still running
	if after := sb.read(t, "tick"); after != before {
		t.Errorf("paused sandbox kept running: tick %s -> %s", before, after)
	}
	if err := p.Resume(ctx, sb.id); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	waitState(t, d, sb.id, runtime.StatusRunning)
	deadline := time.Now().Add(10 * time.Second)
	for sb.read(t, "tick") == before {
		if time.Now().After(deadline) {
			t.Fatalf("resumed sandbox does not run: tick stuck at %s", before)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A paused sandbox must still be deletable.
	if err := p.Pause(ctx, sb.id); err != nil {
		t.Fatalf("second Pause: %v", err)
	}
	if err := d.Delete(ctx, sb.id); err != nil {
		t.Fatalf("Delete of a paused sandbox: %v", err)
	}
	if err := p.Pause(ctx, sb.id); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("Pause(deleted) = %v; want ErrNotFound", err)
	}
}

// testConcurrent starts and deletes several sandboxes at once on one driver.
func testConcurrent(t *testing.T, d runtime.Driver, rootfs string) {
	const n = 6
	ids := make([]string, n)
	errs := make(chan error, n)
	for i := range ids {
		ids[i] = NewID(t)
		go func(id string) {
			errs <- d.Start(t.Context(), runtime.Spec{ID: id, Lower: []string{rootfs}, Args: []string{"/bin/sleep", "1000"}})
		}(ids[i])
	}
	for range ids {
		if err := <-errs; err != nil {
			t.Errorf("concurrent Start: %v", err)
		}
	}
	t.Cleanup(func() {
		for _, id := range ids {
			_ = d.Delete(context.Background(), id)
		}
	})
	listed, err := d.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if st, err := d.State(t.Context(), id); err != nil || st != runtime.StatusRunning {
			t.Errorf("State(%s) = %q, %v; want running", id, st, err)
		}
		if !slices.Contains(listed, id) {
			t.Errorf("List misses %s", id)
		}
	}
	for _, id := range ids {
		go func(id string) { errs <- d.Delete(t.Context(), id) }(id)
	}
	for range ids {
		if err := <-errs; err != nil {
			t.Errorf("concurrent Delete: %v", err)
		}
	}
	for _, id := range ids {
		if _, err := d.State(t.Context(), id); !errors.Is(err, runtime.ErrNotFound) {
			t.Errorf("State(%s) after Delete = %v; want ErrNotFound", id, err)
		}
	}
}

// testUnixSocketToHost checks the host can dial a unix socket that a process
// in the sandbox created in a bind mount: the path every host-to-envd
// request takes.
func testUnixSocketToHost(t *testing.T, d runtime.Driver, rootfs string) {
	bin := buildProbe(t)
	sb := start(t, d, rootfs, "", func(s *runtime.Spec) {
		s.Args = []string{"/helper/probe", "uds-server", "/out/s.sock"}
		s.Env = append(s.Env, "HOSTNAME=box")
		s.Mounts = append(s.Mounts, runtime.Mount{Source: bin, Target: "/helper", ReadOnly: true})
	})
	sock := filepath.Join(sb.out, "s.sock")
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || line != "pong from box\n" {
				t.Fatalf("read from the sandbox's socket: %q, %v", line, err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cannot dial the sandbox's unix socket %s: %v", sock, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
