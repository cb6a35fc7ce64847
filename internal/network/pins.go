package network

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"sync"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// pinNS keeps the server's network namespaces alive by bind mounts made in
// a mount namespace of their own, not in the host's.
//
// A namespace lives only while something holds it. A bind mount of its
// nsfs file holds it across restarts of the server and while a sandbox
// has no process (paused to disk), but in the host's mount table each
// sandbox's pin costs every later sandbox start: the OCI runtime copies
// the whole table into the new container's mount namespace and unmounts
// it again, about 4 µs per mount, charged to the new sandbox. So the pins
// live in a private mount namespace whose whole tree is one small tmpfs
// (with /proc, to reach the namespaces by descriptor), and only that
// namespace is pinned on the host, by one bind mount at <NetnsDir>.mnt.
//
// A thread of the server stays inside it for the server's life and makes
// and removes the pins; the host and the runtimes open a namespace through
// that thread's root, /proc/<server pid>/task/<tid>/root/n/<id>. The path
// is the server's own: a sandbox can neither plant anything in that tree
// (only the thread writes there) nor take over the pid, which stays the
// server's while the path is handed out. It changes with every server
// process, so it is never persisted as a way to find a namespace: the
// file <NetnsDir>/<id> stays the namespace's name (leases, List), and
// JoinPath turns the name into a path valid for this process.
type pinNS struct {
	hostFile string // where the mount namespace is pinned on the host
	root     string // /proc/<pid>/task/<tid>/root: the namespace's tree
	ops      chan pinOp
	// quit, not closing ops, ends the thread: do may still be sending
	// (a Teardown racing Close), and a send on a closed channel panics.
	quit chan struct{}
	done chan struct{}
	stop sync.Once
}

type pinOp struct {
	fn  func() error
	res chan error
}

// nsGetNSType and nsGetMntNSID are the ioctls NS_GET_NSTYPE and
// NS_GET_MNTNS_ID (linux/nsfs.h).
const (
	nsGetNSType  = 0xb703
	nsGetMntNSID = 0x8008b705
)

// mountNSID returns the kernel's id of the mount namespace at path (a
// /proc/.../ns/mnt file), or 0 where the kernel gives none.
func mountNSID(path string) uint64 {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	defer unix.Close(fd)
	var id uint64
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), nsGetMntNSID, uintptr(unsafe.Pointer(&id))); e != 0 {
		return 0
	}
	return id
}

// errMountNSOrder: no CPU gave the pins' mount namespace an id above the
// server's own, which the kernel needs to let it be pinned (orderAfter).
var errMountNSOrder = errors.New("no CPU this server may use made a mount namespace the kernel lets it pin (Linux 6.18+ orders mount namespaces by per-CPU ids)")

// orderAfter replaces this thread's mount namespace by a copy whose id is
// above host's, the id of the namespace that pins it (0: unknown).
//
// The kernel refuses to bind-mount a mount namespace whose id is not above
// the binder's own (mnt_ns_loop: that could be a loop) with EINVAL, and
// since Linux 6.18 the ids come from per-CPU batches of 4096, so a
// namespace made later on another CPU can have a smaller id than an older
// one. A server in a container (its namespace made on whichever CPU) then
// failed to pin its pins' namespace whenever that was made on a CPU whose
// batch was older than the container's: the EINVAL was taken for a shared
// mount, and the private-mount remedy failed the same way. The CPU that
// made the host's namespace has handed out only larger ids since, and so
// has any CPU whose batch is newer, so a copy is made on each CPU in turn
// until one has a larger id. The tree is the small tmpfs, so a copy is
// cheap, and the lower one goes as the thread leaves it.
func orderAfter(host uint64) error {
	const self = "/proc/thread-self/ns/mnt"
	if id := mountNSID(self); host == 0 || id == 0 || id > host {
		return nil
	}
	var was unix.CPUSet
	if err := unix.SchedGetaffinity(0, &was); err != nil {
		return fmt.Errorf("read the thread's CPUs: %w", err)
	}
	defer unix.SchedSetaffinity(0, &was)
	// The CPUs this thread may use first, then the others of the cpuset
	// (the operator's taskset is the server's threads', not the kernel's
	// batches'): one unshare on each is all this costs them.
	for _, allowed := range []bool{true, false} {
		for cpu := range 8 * int(unsafe.Sizeof(was)) {
			if was.IsSet(cpu) != allowed {
				continue
			}
			var one unix.CPUSet
			one.Set(cpu)
			if unix.SchedSetaffinity(0, &one) != nil {
				continue // offline, or outside the cpuset
			}
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("copy the mount namespace: %w", err)
			}
			if mountNSID(self) > host {
				return nil
			}
		}
	}
	return errMountNSOrder
}

// pinnedMountNS reports whether path is a pinned mount namespace.
func pinnedMountNS(path string) bool {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	t, err := unix.IoctlRetInt(fd, nsGetNSType)
	return err == nil && t == unix.CLONE_NEWNS
}

// startPins joins the mount namespace pinned at hostFile or, when there is
// none, makes one and pins it there.
func startPins(hostFile string) (*pinNS, error) {
	p := &pinNS{hostFile: hostFile, ops: make(chan pinOp), quit: make(chan struct{}), done: make(chan struct{})}
	join := pinnedMountNS(hostFile)
	if !join {
		f, err := os.OpenFile(hostFile, os.O_CREATE|os.O_RDONLY, 0o444)
		if err != nil {
			return nil, fmt.Errorf("create the namespace pin %s: %w", hostFile, err)
		}
		f.Close()
	}
	// The id of the namespace pinMountNS binds from: this thread's.
	host := mountNSID("/proc/thread-self/ns/mnt")
	ready := make(chan int, 1)
	errc := make(chan error, 1)
	go p.loop(join, host, ready, errc)
	var tid int
	select {
	case tid = <-ready:
	case err := <-errc:
		return nil, err
	}
	p.root = "/proc/" + strconv.Itoa(os.Getpid()) + "/task/" + strconv.Itoa(tid) + "/root"
	if !join {
		// From this (host) thread: the worker no longer sees the host's tree.
		if err := pinMountNS("/proc/self/task/"+strconv.Itoa(tid)+"/ns/mnt", hostFile); err != nil {
			p.close()
			return nil, err
		}
	}
	return p, nil
}

// errSharedPin: the mount namespace cannot be pinned where it would last.
var errSharedPin = errors.New("the data dir is on a shared mount (mount propagation) outside the host's mount namespace")

// errPinOnHost: the pins' mount namespace could not be made or pinned, for
// whatever reason (startedPins logs it): network namespaces are pinned on
// their names in the host's mount table instead, as before pins.go.
var errPinOnHost = errors.New("network namespaces are pinned in the host's mount table")

// inHostMountNS reports whether this process is in the host's (pid 1's)
// mount namespace, where a mount lasts until it is undone or the machine
// reboots. A variable for tests.
//
// Pid 1 is the machine's init only in the initial pid namespace: in a
// container with one of its own it is the container's (tini), in the
// container's mount namespace, and a pin made private there ends with the
// container, where pins on a shared (Bidirectional) data dir would have
// reached the host.
var inHostMountNS = func() bool {
	var pid unix.Stat_t
	if unix.Stat("/proc/self/ns/pid", &pid) != nil || pid.Ino != procPIDInitIno {
		return false
	}
	self, err1 := os.Readlink("/proc/self/ns/mnt")
	init, err2 := os.Readlink("/proc/1/ns/mnt")
	return err1 == nil && err2 == nil && self == init
}

// procPIDInitIno is the inode of the initial pid namespace, fixed by the
// kernel (PROC_PID_INIT_INO, include/linux/proc_ns.h).
const procPIDInitIno = 0xeffffffc

// pinMountNS bind-mounts the mount namespace src at file. The kernel
// never propagates a mount namespace's file to other mounts, so on a
// shared mount with peers (systemd makes / shared; a Kubernetes
// Bidirectional volume) the bind fails. In the host's mount namespace the
// file is then first made a private mount of its own, which lasts as long
// as the pin must; elsewhere (a container, whose mount namespace may end
// before the sandboxes do) errSharedPin tells the caller to pin each
// network namespace on the host instead.
//
// A variable for tests.
var pinMountNS = func(src, file string) error {
	err := unix.Mount(src, file, "none", unix.MS_BIND, "")
	if errors.Is(err, unix.EINVAL) {
		// Not sharing but the order of ids (orderAfter): say so.
		if own, id := mountNSID("/proc/thread-self/ns/mnt"), mountNSID(src); id != 0 && id <= own {
			return fmt.Errorf("pin the namespaces' mount namespace at %s: its id %d is not above this one's, %d: %w",
				file, id, own, errMountNSOrder)
		}
		if !inHostMountNS() {
			return errSharedPin
		}
		if err = unix.Mount(file, file, "none", unix.MS_BIND, ""); err == nil {
			if err = unix.Mount("", file, "", unix.MS_PRIVATE, ""); err == nil {
				err = unix.Mount(src, file, "none", unix.MS_BIND, "")
			}
			if err != nil {
				_ = unix.Unmount(file, unix.MNT_DETACH)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("pin the namespaces' mount namespace at %s: %w", file, err)
	}
	return nil
}

// loop runs on a thread that leaves the host's mount namespace for good:
// it is never unlocked, so it ends with this goroutine instead of going
// back to the Go scheduler.
func (p *pinNS) loop(join bool, host uint64, ready chan<- int, errc chan<- error) {
	goruntime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// The main thread: /proc/self is its view, and Go never ends
		// it. Hand over to another thread, which the locked main thread
		// guarantees, and give this one back.
		handed := make(chan struct{})
		go func() {
			goruntime.LockOSThread()
			close(handed)
			p.loop(join, host, ready, errc)
		}()
		<-handed
		goruntime.UnlockOSThread()
		return
	}
	defer close(p.done)
	if err := p.enter(join, host); err != nil {
		errc <- err
		return
	}
	ready <- unix.Gettid()
	for {
		select {
		case op := <-p.ops:
			op.res <- op.fn()
		case <-p.quit:
			return
		}
	}
}

func (p *pinNS) enter(join bool, host uint64) error {
	var fd int
	if join {
		var err error
		if fd, err = unix.Open(p.hostFile, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0); err != nil {
			return fmt.Errorf("open the namespace pin %s: %w", p.hostFile, err)
		}
		defer unix.Close(fd)
	}
	// setns and pivot_root want a thread whose root and cwd are its own.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare the thread's filesystem context: %w", err)
	}
	if join {
		if err := unix.Setns(fd, unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("enter the namespaces' mount namespace %s: %w", p.hostFile, err)
		}
		return unix.Chdir("/")
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"unshare the mount namespace", func() error { return unix.Unshare(unix.CLONE_NEWNS) }},
		{"make it private", func() error { return unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "") }},
		// Mounted over any host directory: only this namespace sees it there.
		{"mount its tmpfs", func() error {
			return unix.Mount("sbx-netns", filepath.Dir(p.hostFile), "tmpfs",
				unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700,size=64k")
		}},
		{"enter it", func() error { return unix.Chdir(filepath.Dir(p.hostFile)) }},
		{"make its dirs", func() error {
			return errors.Join(unix.Mkdir("proc", 0o555), unix.Mkdir("n", 0o700), unix.Mkdir("old", 0o700))
		}},
		{"mount /proc", func() error {
			return unix.Mount("proc", "proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
		}},
		// The copy of the host's tree goes: it would hold every host
		// mount of the moment (other servers' sandboxes) for as long as
		// this namespace lives.
		{"make the tmpfs its root", func() error { return unix.PivotRoot(".", "old") }},
		{"drop the host's tree", func() error { return unix.Unmount("/old", unix.MNT_DETACH) }},
		{"remove old", func() error { return unix.Rmdir("/old") }},
		{"chdir /", func() error { return unix.Chdir("/") }},
		{"order it after the host's", func() error { return orderAfter(host) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("make the namespaces' mount namespace: %s: %w", s.what, err)
		}
	}
	return nil
}

// do runs fn on the thread inside the namespace.
func (p *pinNS) do(fn func() error) error {
	res := make(chan error, 1)
	select {
	case p.ops <- pinOp{fn, res}:
	case <-p.done:
		return errors.New("the namespace pinning thread is gone")
	}
	return <-res
}

// path is where the host opens the namespace of id.
func (p *pinNS) path(id string) string { return p.root + "/n/" + id }

// pin holds the network namespace open as nsFD under id.
func (p *pinNS) pin(id string, nsFD int) error {
	return p.do(func() error {
		target := "/n/" + id
		fd, err := unix.Open(target, unix.O_CREAT|unix.O_EXCL|unix.O_RDONLY|unix.O_CLOEXEC, 0o444)
		if err != nil {
			return fmt.Errorf("create pin %s: %w", id, err)
		}
		unix.Close(fd)
		if err := unix.Mount("/proc/self/fd/"+strconv.Itoa(nsFD), target, "none", unix.MS_BIND, ""); err != nil {
			_ = unix.Unlink(target)
			return fmt.Errorf("pin network namespace %s: %w", id, err)
		}
		return nil
	})
}

// unpin lets the namespace of id go (it ends with its last process).
// What does not exist is not an error.
func (p *pinNS) unpin(id string) error {
	return p.do(func() error {
		target := "/n/" + id
		var errs []error
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unpin network namespace %s: %w", id, err))
		}
		if err := unix.Unlink(target); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove pin %s: %w", id, err))
		}
		return errors.Join(errs...)
	})
}

// ids lists the pinned namespaces.
func (p *pinNS) ids() ([]string, error) {
	var ids []string
	err := p.do(func() error {
		es, err := os.ReadDir("/n")
		for _, e := range es {
			ids = append(ids, e.Name())
		}
		return err
	})
	return ids, err
}

// close ends the thread; the namespace stays pinned on the host.
func (p *pinNS) close() {
	p.stop.Do(func() { close(p.quit) })
	<-p.done
}

// remove unpins the mount namespace from the host; with no thread left in
// it, it goes, and every namespace still pinned there with it.
func (p *pinNS) remove() error {
	p.close()
	for range 2 { // the pin, and the private mount under it (pinMountNS)
		if err := unix.Unmount(p.hostFile, unix.MNT_DETACH); errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break
		} else if err != nil {
			return fmt.Errorf("unmount %s: %w", p.hostFile, err)
		}
	}
	if err := os.Remove(p.hostFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// pinFile is where this server's pins' mount namespace is pinned on the
// host: beside NetnsDir, whose entries are namespace names only.
func (m *Manager) pinFile() string { return m.cfg.NetnsDir + ".mnt" }

// startedPins returns the pins, starting them for the first namespace.
func (m *Manager) startedPins() (*pinNS, error) {
	m.pinMu.Lock()
	defer m.pinMu.Unlock()
	if m.hostPins {
		return nil, errPinOnHost
	}
	if m.pins == nil {
		p, err := startPins(m.pinFile())
		if err != nil {
			// Sandboxes work either way: a pin that cannot be kept out
			// of the host's table costs time, never a sandbox.
			m.hostPins = true
			m.log.Warn("network namespaces are pinned in the host's mount table, where each costs every later sandbox start "+
				"about 4 µs: "+pinAdvice(err), "reason", err)
			return nil, errPinOnHost
		}
		m.pins = p
	}
	return m.pins, nil
}

// pinAdvice says what the operator can do about err from startPins.
func pinAdvice(err error) string {
	switch {
	case errors.Is(err, errSharedPin):
		return "make the data dir a private mount to keep them out of it (mount --bind DIR DIR && mount --make-private DIR)"
	case errors.Is(err, errMountNSOrder):
		return "let the server run on every CPU (taskset, cpuset) and restart it to keep them out of it"
	default:
		return "the reason says why the namespace that keeps them out of it could not be made or pinned; " +
			"remove its cause and restart the server"
	}
}

// pinFor returns how Begin pins the namespace of id, and the path by which
// it is then joined: in the pins' mount namespace or, where that cannot be
// made or pinned to last (errPinOnHost), on its name in the host's, as
// before.
func (m *Manager) pinFor(id string) (func(netns.NsHandle) error, string, error) {
	pins, err := m.startedPins()
	if errors.Is(err, errPinOnHost) {
		path := m.nsPath(id)
		return func(ns netns.NsHandle) error {
			if err := unix.Mount("/proc/self/fd/"+strconv.Itoa(int(ns)), path, "none", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind-mount network namespace at %s: %w", path, err)
			}
			return nil
		}, path, nil
	}
	if err != nil {
		return nil, "", err
	}
	return func(ns netns.NsHandle) error { return pins.pin(id, int(ns)) }, pins.path(id), nil
}

// JoinPath returns the path by which the namespace of sandbox id is opened
// (and joined by an OCI runtime) while this server process runs. It is not
// a name to persist: a restarted server gives another one. It fails with
// ErrNotFound when the namespace is gone.
func (m *Manager) JoinPath(id string) (string, error) {
	if err := validateID(id); err != nil {
		return "", err
	}
	m.pinMu.Lock()
	pins := m.pins
	m.pinMu.Unlock()
	candidates := []string{m.nsPath(id)} // pinned on its name by an older build
	if pins != nil {
		candidates = append([]string{pins.path(id)}, candidates...)
	}
	for _, p := range candidates {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && st.Type == unix.NSFS_MAGIC {
			return p, nil
		}
	}
	return "", errdefs.NotFound("network namespace of sandbox %s", id)
}

// dropOrphanPins unpins namespaces whose name is gone: a crash between the
// two steps of a Teardown leaves one.
func (m *Manager) dropOrphanPins(named []string) error {
	m.pinMu.Lock()
	pins := m.pins
	m.pinMu.Unlock()
	if pins == nil {
		return nil
	}
	pinned, err := pins.ids()
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range pinned {
		if !slices.Contains(named, id) {
			m.log.Info("unpinning a network namespace without a sandbox", "sandbox.id", id)
			errs = append(errs, pins.unpin(id))
		}
	}
	return errors.Join(errs...)
}

// removePins unpins the pins' mount namespace from the host once no
// namespace is left in it.
func (m *Manager) removePins() error {
	m.pinMu.Lock()
	defer m.pinMu.Unlock()
	if m.pins == nil {
		return nil
	}
	if ids, err := m.pins.ids(); err != nil || len(ids) > 0 {
		return err
	}
	err := m.pins.remove()
	m.pins = nil
	return err
}
