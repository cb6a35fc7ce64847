package network

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// mountLines returns the lines of a mountinfo file that mention s.
func mountLines(t *testing.T, file, s string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

// pinsMountinfo is the mountinfo of the pins' mount namespace.
func pinsMountinfo(m *Manager) string {
	return strings.TrimSuffix(m.pins.root, "/root") + "/mountinfo"
}

// TestPinsStayOutOfTheHostMountTable: sandbox namespaces add nothing to the
// host's mount table but the one pin of their mount namespace, and each is
// still reached (and holds its address) by the path JoinPath gives.
func TestPinsStayOutOfTheHostMountTable(t *testing.T) {
	m, cfg := newTestManager(t)
	var ids []string
	for i := range 5 {
		id, path := setup(t, m, i%2 == 0)
		ids = append(ids, id)
		if got := joinPath(t, m, id); got != path {
			t.Errorf("JoinPath(%s) = %s; want the path Setup gave, %s", id, got, path)
		}
		if i%2 == 0 && !slices.Contains(links(t, path), sandboxIf) {
			t.Errorf("namespace %s has no %s", id, sandboxIf)
		}
	}
	for _, id := range ids {
		if l := mountLines(t, "/proc/thread-self/mountinfo", id); len(l) > 0 {
			t.Errorf("sandbox %s's namespace is in the host's mount table: %q", id, l)
		}
		if l := mountLines(t, pinsMountinfo(m), "/n/"+id); len(l) != 1 {
			t.Errorf("pins of %s in the pins' mount namespace = %q; want one", id, l)
		}
		if fi, err := os.Lstat(filepath.Join(cfg.NetnsDir, id)); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("name of %s: %v, %v; want a plain file", id, fi, err)
		}
	}
	if l := mountLines(t, "/proc/thread-self/mountinfo", " "+m.pinFile()+" "); len(l) != 1 {
		t.Errorf("host mounts of the pin %s = %q; want one", m.pinFile(), l)
	}
	// The pins' namespace holds nothing of the host's tree.
	if l := slices.DeleteFunc(mountLines(t, pinsMountinfo(m), " - "), func(l string) bool {
		return strings.Contains(l, " /n/")
	}); len(l) != 2 {
		t.Errorf("the pins' mount namespace holds %d mounts besides the pins; want its tmpfs and /proc:\n%s",
			len(l), strings.Join(l, "\n"))
	}
}

// TestPinsThreadIsNotTheMainThread: /proc/self (the main thread) stays in
// the host's mount namespace, whichever thread the pins' one was.
func TestPinsThreadIsNotTheMainThread(t *testing.T) {
	m, _ := newTestManager(t)
	setup(t, m, false)
	self, _ := os.Readlink("/proc/self/ns/mnt")
	host, _ := os.Readlink("/proc/thread-self/ns/mnt")
	pins, _ := os.Readlink(strings.TrimSuffix(m.pins.root, "/root") + "/ns/mnt")
	if self != host || pins == host || pins == "" {
		t.Errorf("mount namespaces: main thread %s, this thread %s, pins' thread %s; want the first two equal and the pins' another",
			self, host, pins)
	}
}

// TestTeardownLetsTheNamespaceGo: no namespace outlives its sandbox, in
// the host's table or the pins' one, and the pins' namespace itself goes
// with Uninstall once it is empty.
func TestTeardownLetsTheNamespaceGo(t *testing.T) {
	m, cfg := newTestManager(t)
	id, path := setup(t, m, true)
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	must(t, m.Teardown(t.Context(), id))
	if _, err := m.JoinPath(id); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("JoinPath after Teardown = %v; want not found", err)
	}
	if l := mountLines(t, pinsMountinfo(m), "/n/"+id); len(l) > 0 {
		t.Errorf("pin of %s left after Teardown: %q", id, l)
	}
	if _, err := os.Stat(filepath.Join(cfg.NetnsDir, id)); !os.IsNotExist(err) {
		t.Errorf("name of %s after Teardown: %v; want it gone", id, err)
	}
	if ns := procNetNSUsers(st.Ino); len(ns) > 0 {
		t.Errorf("namespace of %s still held after Teardown by %v", id, ns)
	}
	must(t, m.Uninstall(t.Context()))
	if l := mountLines(t, "/proc/thread-self/mountinfo", " "+m.pinFile()+" "); len(l) > 0 {
		t.Errorf("the pins' namespace is still pinned after Uninstall: %q", l)
	}
	if _, err := os.Stat(m.pinFile()); !os.IsNotExist(err) {
		t.Errorf("%s after Uninstall: %v; want it gone", m.pinFile(), err)
	}
}

// procNetNSUsers lists the tasks of this machine in the network namespace
// with inode ino.
func procNetNSUsers(ino uint64) []string {
	links, _ := filepath.Glob("/proc/[0-9]*/task/[0-9]*/ns/net")
	var out []string
	for _, l := range links {
		var st unix.Stat_t
		if unix.Stat(l, &st) == nil && st.Ino == ino {
			out = append(out, l)
		}
	}
	return out
}

// TestRestartJoinsThePins: a new manager (a restarted server: another
// thread, another path) finds the namespaces of the old one, and drops a
// pin whose name is gone (a crash inside Teardown).
func TestRestartJoinsThePins(t *testing.T) {
	m, cfg := newTestManager(t)
	keep, _ := setup(t, m, true)
	orphan, _ := setup(t, m, false)
	addr, _ := m.Address(keep)
	must(t, os.Remove(filepath.Join(cfg.NetnsDir, orphan)))
	old := m.pins.root
	// m stays open, as in TestRestartRecoversAddresses: its cleanup
	// removes what is left.
	m2, err := New(cfg, m.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m2.Close() })
	path := joinPath(t, m2, keep)
	if strings.HasPrefix(path, old) {
		t.Errorf("JoinPath after the restart = %s; want one through the new process's thread, not %s", path, old)
	}
	if got, _ := m2.Address(keep); got != addr {
		t.Errorf("address of %s after the restart = %v; want %v", keep, got, addr)
	}
	if !slices.Contains(links(t, path), sandboxIf) {
		t.Errorf("namespace of %s after the restart has no %s", keep, sandboxIf)
	}
	if ids, _ := m2.pins.ids(); slices.Contains(ids, orphan) {
		t.Errorf("pin of %s, whose name was gone, is still there after the restart", orphan)
	}
	must(t, m2.Teardown(t.Context(), keep))
}

// TestJoinPathOnlyFindsNamespaces: a name that is not a namespace (a plain
// file, as a half-done Setup leaves it) is not handed to a runtime.
func TestJoinPathOnlyFindsNamespaces(t *testing.T) {
	m, cfg := newTestManager(t)
	id := "n" + randHex(t, 15)
	must(t, os.WriteFile(filepath.Join(cfg.NetnsDir, id), nil, 0o444))
	t.Cleanup(func() { _ = os.Remove(filepath.Join(cfg.NetnsDir, id)) })
	if p, err := m.JoinPath(id); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("JoinPath of a plain file = %q, %v; want not found", p, err)
	}
	if _, err := m.JoinPath("../x"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("JoinPath(../x) = %v; want invalid argument", err)
	}
}

// sharedDir returns a directory on a shared mount with a peer, as systemd
// makes / and Kubernetes a Bidirectional volume: the kernel refuses to
// propagate a mount namespace's pin there.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, peer := t.TempDir(), t.TempDir()
	must(t, unix.Mount("sbx-test", dir, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	must(t, unix.Mount("", dir, "", unix.MS_SHARED, ""))
	must(t, unix.Mount(dir, peer, "none", unix.MS_BIND, ""))
	t.Cleanup(func() { _ = unix.Unmount(peer, unix.MNT_DETACH) })
	return dir
}

// TestPinsOnASharedMount: in the host's mount namespace the pin gets a
// private mount of its own and the namespaces still stay out of the
// host's table; in another (a container's, which may end before its
// sandboxes) they are pinned on the host as before, and work.
func TestPinsOnASharedMount(t *testing.T) {
	requireRoot(t)
	for _, host := range []bool{true, false} {
		t.Run(map[bool]string{true: "host", false: "container"}[host], func(t *testing.T) {
			// Whichever namespace the test runs in: the mechanism is the
			// same, and the mounts made here are the test's.
			was := inHostMountNS
			inHostMountNS = func() bool { return host }
			t.Cleanup(func() { inHostMountNS = was })
			dir := sharedDir(t)
			m, _ := newTestManager(t, func(c *Config) { c.NetnsDir = filepath.Join(dir, "netns") })
			id, path := setup(t, m, true)
			if !slices.Contains(links(t, path), sandboxIf) {
				t.Errorf("namespace %s has no %s", id, sandboxIf)
			}
			inHost := len(mountLines(t, "/proc/thread-self/mountinfo", id)) > 0
			if inHost == host {
				t.Errorf("namespace %s in the host's mount table: %v; want %v", id, inHost, !host)
			}
			if got := joinPath(t, m, id); got != path {
				t.Errorf("JoinPath = %s; want %s", got, path)
			}
			must(t, m.Teardown(t.Context(), id))
			if l := mountLines(t, "/proc/thread-self/mountinfo", id); len(l) > 0 {
				t.Errorf("namespace %s still mounted after Teardown: %q", id, l)
			}
			must(t, m.Uninstall(t.Context()))
			if l := mountLines(t, "/proc/thread-self/mountinfo", " "+m.pinFile()+" "); len(l) > 0 {
				t.Errorf("pin %s still mounted after Uninstall: %q", m.pinFile(), l)
			}
		})
	}
}

// TestCloseRacesTeardown: Close while Teardowns run, a second Close, and
// calls after Close return (errors are fine) instead of panicking on the
// pins' thread being gone; a restarted manager then tears down what is left.
func TestCloseRacesTeardown(t *testing.T) {
	m, cfg := newUncleanedManager(t)
	var ids []string
	for range 4 {
		id, _ := setup(t, m, false)
		ids = append(ids, id)
	}
	var wg sync.WaitGroup
	for _, id := range ids[:2] {
		wg.Go(func() { _ = m.Teardown(t.Context(), id) })
	}
	wg.Go(func() { _ = m.Close() })
	wg.Go(func() { _ = m.Close() })
	wg.Wait()
	_ = m.Teardown(t.Context(), ids[3])
	_, _ = m.JoinPath(ids[3])
	_ = m.Uninstall(t.Context())
	_ = m.Close()

	// A restarted server joins the pins and tears the rest down.
	m2, _ := newTestManager(t, func(c *Config) { *c = cfg })
	for _, id := range ids {
		must(t, m2.Teardown(t.Context(), id))
	}
}

// newUncleanedManager is newTestManager for a test that closes the
// manager itself: newTestManager(t, func(c *Config) { *c = cfg }) then
// cleans up after it.
func newUncleanedManager(t *testing.T) (*Manager, Config) {
	t.Helper()
	requireRoot(t)
	cfg := testConfig(t)
	m, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m, cfg
}

// TestPinsFallBackToTheHost: whatever keeps the pins' mount namespace from
// being pinned (EINVAL is what the kernel gave a server in a container in
// CI), sandboxes are still created, pinned on their names in the host's
// mount table, with one Warn line that says why and what to do.
func TestPinsFallBackToTheHost(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name, advice string
		err          error
	}{
		{"kernel refuses", "remove its cause", fmt.Errorf("pin the namespaces' mount namespace at x: %w", unix.EINVAL)},
		{"shared mount", "mount --make-private", errSharedPin},
		{"mount namespace order", "every CPU", errMountNSOrder},
	} {
		t.Run(tc.name, func(t *testing.T) {
			was := pinMountNS
			pinMountNS = func(string, string) error { return tc.err }
			t.Cleanup(func() { pinMountNS = was })
			m, _ := newTestManager(t)
			var logs bytes.Buffer
			m.log = slog.New(slog.NewTextHandler(&logs, nil))
			id, path := setup(t, m, true)
			setup(t, m, false)
			if !slices.Contains(links(t, path), sandboxIf) {
				t.Errorf("namespace %s has no %s", id, sandboxIf)
			}
			if l := mountLines(t, "/proc/thread-self/mountinfo", id); len(l) != 1 {
				t.Errorf("host mounts of %s = %q; want its pin", id, l)
			}
			if got := joinPath(t, m, id); got != path {
				t.Errorf("JoinPath = %s; want %s", got, path)
			}
			warns := slices.DeleteFunc(strings.Split(logs.String(), "\n"), func(l string) bool {
				return !strings.Contains(l, "level=WARN")
			})
			if len(warns) != 1 || !strings.Contains(warns[0], tc.advice) || !strings.Contains(warns[0], "reason=") {
				t.Errorf("warnings = %q; want one with the reason and %q", warns, tc.advice)
			}
			must(t, m.Teardown(t.Context(), id))
			if l := mountLines(t, "/proc/thread-self/mountinfo", id); len(l) > 0 {
				t.Errorf("namespace %s still mounted after Teardown: %q", id, l)
			}
		})
	}
}

// TestPinsFromANewerMountNamespace: the pins' mount namespace is pinned
// from a namespace with a larger id than the first one its thread gets.
// Since Linux 6.18 mount namespace ids come from per-CPU batches, so a
// namespace made on another CPU can have a smaller id than an older one,
// and the kernel refused the pin (EINVAL): a server in a container failed
// to create sandboxes. Here that namespace is made on one CPU once its
// batch is past the other's, and every other thread of the process is
// held on the other CPU, where the pins' thread starts.
func TestPinsFromANewerMountNamespace(t *testing.T) {
	requireRoot(t)
	const self = "/proc/thread-self/ns/mnt"
	if mountNSID(self) == 0 {
		t.Skip("the kernel gives no mount namespace ids (NS_GET_MNTNS_ID): they are then in the order of creation")
	}
	var all unix.CPUSet
	must(t, unix.SchedGetaffinity(0, &all))
	var cpus []int
	for c := range 8 * int(unsafe.Sizeof(all)) {
		if all.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) < 2 {
		t.Skip("needs two CPUs, to make mount namespaces on both")
	}
	high, low := cpus[0], cpus[1]
	t.Cleanup(func() { holdThreads(-1, all) })
	file := filepath.Join(t.TempDir(), "netns.mnt")
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends with the goroutine, and the
		// namespaces made on it with the thread.
		goruntime.LockOSThread()
		errc <- func() error {
			lowID, err := newMountNSOn(low)
			if err != nil {
				return err
			}
			if err := onCPU(high); err != nil {
				return err
			}
			host := uint64(0)
			for range 2 * 4096 { // a batch is 4096 ids: the next one is the newest
				if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
					return err
				}
				if host = mountNSID(self); host > lowID {
					break
				}
			}
			if host <= lowID {
				return fmt.Errorf("no mount namespace on CPU %d got an id above %d, CPU %d's", high, lowID, low)
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return err
			}
			var one unix.CPUSet
			one.Set(low)
			holdThreads(unix.Gettid(), one)
			p, err := startPins(file)
			if err != nil {
				return fmt.Errorf("startPins from a mount namespace with id %d (CPU %d's first: %d): %w", host, low, lowID, err)
			}
			defer p.remove()
			pins := mountNSID(strings.TrimSuffix(p.root, "/root") + "/ns/mnt")
			if !pinnedMountNS(file) || pins <= host {
				return fmt.Errorf("pins' mount namespace %d pinned at %s: %v; want it pinned, with an id above %d",
					pins, file, pinnedMountNS(file), host)
			}
			// It pins as before (this thread's network namespace).
			ns, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(ns)
			if err := p.pin("x", ns); err != nil {
				return err
			}
			var st unix.Statfs_t
			if err := unix.Statfs(p.path("x"), &st); err != nil || st.Type != unix.NSFS_MAGIC {
				return fmt.Errorf("pin at %s: %v, type %#x; want a namespace", p.path("x"), err, st.Type)
			}
			return p.unpin("x")
		}()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// newMountNSOn returns the id of a mount namespace made on cpu.
func newMountNSOn(cpu int) (uint64, error) {
	type res struct {
		id  uint64
		err error
	}
	c := make(chan res, 1)
	go func() {
		goruntime.LockOSThread() // never unlocked: see TestPinsFromANewerMountNamespace
		if err := onCPU(cpu); err != nil {
			c <- res{err: err}
			return
		}
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			c <- res{err: err}
			return
		}
		c <- res{id: mountNSID("/proc/thread-self/ns/mnt")}
	}()
	r := <-c
	return r.id, r.err
}

func onCPU(cpu int) error {
	var one unix.CPUSet
	one.Set(cpu)
	return unix.SchedSetaffinity(0, &one)
}

// holdThreads sets the CPUs of every thread of this process but but.
func holdThreads(but int, cpus unix.CPUSet) {
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, e := range tasks {
		if tid, err := strconv.Atoi(e.Name()); err == nil && tid != but {
			_ = unix.SchedSetaffinity(tid, &cpus)
		}
	}
}

// TestInHostMountNSNotInAPidNamespace: in a container with a pid
// namespace of its own (tini as pid 1), pid 1's mount namespace is the
// container's, not the host's.
func TestInHostMountNSNotInAPidNamespace(t *testing.T) {
	if os.Getenv("SBX_TEST_IN_HOST_MOUNT_NS") != "" {
		fmt.Println("inHostMountNS:", inHostMountNS())
		return
	}
	requireRoot(t)
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount-proc", os.Args[0],
		"-test.run=^TestInHostMountNSNotInAPidNamespace$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SBX_TEST_IN_HOST_MOUNT_NS=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(string(out), "inHostMountNS: false") {
		t.Errorf("in a pid namespace of its own, as pid 1: %s; want inHostMountNS false", out)
	}
}
