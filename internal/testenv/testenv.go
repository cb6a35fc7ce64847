// Package testenv decides, in one place, whether a test that needs the
// machine (root, an OCI runtime, a Jupyter kernel, ...) runs, skips, or
// fails: tests skip with a message where a need is missing, and fail instead
// when SBX_REQUIRE_INTEGRATION=1 (set by .ci/run), so CI never passes by
// skipping.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Need is one thing a test needs from the machine.
type Need struct {
	what string // said in the skip message: "root", "crun on PATH (...)"
	ok   func() bool
}

// Root needs the test process to run as root.
var Root = Need{what: "root", ok: func() bool { return os.Geteuid() == 0 }}

// Binary needs a program on PATH; hint says how to get it.
func Binary(name, hint string) Need {
	return Need{what: fmt.Sprintf("%s on PATH (%s)", name, hint), ok: func() bool {
		_, err := exec.LookPath(name)
		return err == nil
	}}
}

// Crun needs crun, the default OCI runtime.
var Crun = Binary("crun", "apt-get install crun")

// Runsc needs gVisor's runsc (scripts/install-deps.sh builds it).
var Runsc = Binary("runsc", "scripts/install-deps.sh builds it from the Go module proxy")

// Postgres needs a throwaway PostgreSQL server named by SBX_TEST_POSTGRES,
// which `make test` starts (scripts/with-postgres.sh).
var Postgres = Need{what: "a PostgreSQL server in SBX_TEST_POSTGRES (run the tests through scripts/with-postgres.sh, as make test does)",
	ok: func() bool { return os.Getenv("SBX_TEST_POSTGRES") != "" }}

// KubeAPIServer needs a real kube-apiserver and etcd in the directory named
// by KUBEBUILDER_ASSETS (envtest's variable), which `make test` sets to the
// per-machine cache scripts/build-kube-tools.sh fills.
var KubeAPIServer = Need{what: "kube-apiserver and etcd in KUBEBUILDER_ASSETS (scripts/build-kube-tools.sh builds them once per machine; make test sets it)",
	ok: func() bool {
		dir := os.Getenv("KUBEBUILDER_ASSETS")
		for _, b := range []string{"kube-apiserver", "etcd"} {
			if fi, err := os.Stat(filepath.Join(dir, b)); dir == "" || err != nil || fi.Mode()&0o111 == 0 {
				return false
			}
		}
		return true
	}}

// Integration is what end-to-end tests of a real `sbx serve` need.
var Integration = []Need{Root, Crun}

// Strict reports whether skips turn into failures (SBX_REQUIRE_INTEGRATION=1).
func Strict() bool { return os.Getenv("SBX_REQUIRE_INTEGRATION") == "1" }

// Require skips t unless every need is met, or fails it under
// SBX_REQUIRE_INTEGRATION=1.
func Require(t testing.TB, needs ...Need) {
	t.Helper()
	var missing []string
	for _, n := range needs {
		if !n.ok() {
			missing = append(missing, n.what)
		}
	}
	if len(missing) > 0 {
		Skip(t, "needs %s", strings.Join(missing, " and "))
	}
}

// Skip skips t with the reason, or fails it under SBX_REQUIRE_INTEGRATION=1.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	reason := fmt.Sprintf(format, args...)
	if Strict() {
		t.Fatalf("%s (SBX_REQUIRE_INTEGRATION=1 turns this skip into a failure)", reason)
	}
	t.Skipf("%s; skipping", reason)
}

// Tmpfs returns a fresh directory on a real tmpfs (/dev/shm), as a
// sandbox's writable layer is, removed after the test; it skips (or fails
// under SBX_REQUIRE_INTEGRATION=1) without one.
func Tmpfs(t testing.TB) string {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs("/dev/shm", &st); err != nil || st.Type != tmpfsMagic {
		Skip(t, "needs a tmpfs at /dev/shm")
	}
	dir, err := os.MkdirTemp("/dev/shm", "sbx-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

const tmpfsMagic = 0x01021994

// ManyFiles creates n empty files named 0 to n-1 in dir: a directory as
// wide as a sandbox can make one.
func ManyFiles(t testing.TB, dir string, n int) {
	t.Helper()
	for i := range n {
		f, err := os.Create(filepath.Join(dir, strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}

// BytesAllocated returns what fn allocated on the heap, counted by the
// runtime (a size, not a time, so it holds on a loaded machine). Call it
// from a test that is not parallel, so the count is fn's alone.
func BytesAllocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// NestedDirs nests depth directories named d below dir, by descriptor (as
// a loop of mkdir and cd in a sandbox does; the path would outgrow
// PATH_MAX).
func NestedDirs(t testing.TB, dir string, depth int) {
	t.Helper()
	fd, err := syscall.Open(dir, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range depth {
		if err := syscall.Mkdirat(fd, "d", 0o755); err != nil {
			t.Fatalf("mkdir level %d: %v", i, err)
		}
		next, err := syscall.Openat(fd, "d", syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0)
		syscall.Close(fd)
		if err != nil {
			t.Fatalf("open level %d: %v", i, err)
		}
		fd = next
	}
	syscall.Close(fd)
}

// WithSpareFDs runs fn with the process's descriptor limit lowered to
// spare more than it has open, as a busy server has, and restores it. Call
// it from a test that is not parallel: the limit is the whole process's.
func WithSpareFDs(t testing.TB, spare int, fn func()) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	open, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		Skip(t, "needs /proc/self/fd: %v", err)
	}
	tight := lim
	tight.Cur = uint64(len(open) + spare)
	if tight.Cur >= lim.Cur {
		t.Skipf("RLIMIT_NOFILE %d already leaves no more than %d spare", lim.Cur, spare)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &tight); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}()
	fn()
}

// StartAtPid starts `sleep 300` (leading a process group of its own if
// ownGroup) as process pid, by setting the kernel's last pid just below it (root; skips
// otherwise), to play a process that reused a dead one's number; nil if
// the number was never free (another fork, or a process holding it). The
// caller kills and waits for it.
func StartAtPid(t testing.TB, pid int, ownGroup bool) *exec.Cmd {
	t.Helper()
	for range 50 {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			Skip(t, "cannot choose the next pid (needs root): %v", err)
		}
		cmd := exec.Command("sleep", "300")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: ownGroup}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if cmd.Process.Pid == pid {
			return cmd
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	return nil
}
