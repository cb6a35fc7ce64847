package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/procsys"
)

// The root filesystem of a sandbox in a user namespace is an overlay whose
// lower layers are idmapped mounts of the template's layers: a file owned
// by uid 0 on disk appears owned by the sandbox's host root (idRange.UID),
// which is root inside. The template stays untouched and shared; nothing is
// chowned. The upper (writable) layer then stores host ids, which is why a
// build step's layer is captured with ids shifted back (CaptureLayer).

// usernsHolderEnv marks a child started only so that its parent can open
// its user namespace (see newUserNS).
const usernsHolderEnv = "_SBX_USERNS_HOLDER"

func init() {
	if os.Getenv(usernsHolderEnv) == "1" {
		// Hold the namespace until the parent has opened it and closes
		// our stdin. Nothing else runs in this process.
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
}

// newUserNS returns a user namespace mapping ids 0..r.Size-1 to r's host
// ids, as an open /proc/<pid>/ns/user file. A Go program cannot unshare a
// user namespace (it is multithreaded), so a child does it. The child is
// stopped at its exec (stoppedUserNS) where ptrace is allowed; otherwise
// it is this binary re-executed, which does nothing but wait (see init
// above).
func newUserNS(r idRange) (*os.File, error) {
	if f, err := stoppedUserNS(r); err == nil {
		return f, nil
	}
	return heldUserNS(r)
}

// stoppedUserNS makes the user namespace with a child that never runs: it
// asks to be traced (PTRACE_TRACEME), so the kernel stops it at its exec,
// before a single instruction of the new program, and it is killed once
// its namespace is open. Running the child instead (heldUserNS) starts
// the whole server binary, Go runtime and package inits included: about
// 40 ms of CPU and a thousand page faults on a 2-core PVM host, for every
// sandbox that takes a uid range not used before (a host filling up with
// sandboxes pays it at every create).
func stoppedUserNS(r idRange) (*os.File, error) {
	// The tracer is the forking thread: keep it while the child lives.
	goruntime.LockOSThread()
	defer goruntime.UnlockOSThread()
	cmd := exec.Command("/proc/self/exe")
	// Should it ever run (its tracer gone), it is a holder whose stdin
	// (/dev/null) is already closed: it exits at once.
	cmd.Env = []string{usernsHolderEnv + "=1"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(r.UID), Size: int(r.Size)}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(r.GID), Size: int(r.Size)}},
		Ptrace:      true,
		Pdeathsig:   syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start a stopped process in a new user namespace: %w", err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	ns, err := os.Open("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/user")
	if err != nil {
		return nil, fmt.Errorf("open the new user namespace: %w", err)
	}
	return ns, nil
}

// heldUserNS makes the user namespace with a child that waits for its
// stdin to close.
func heldUserNS(r idRange) (*os.File, error) {
	exe, err := os.Executable()
	if err != nil {
		exe = "/proc/self/exe"
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer pw.Close()
	cmd := exec.Command(exe)
	cmd.Path = "/proc/self/exe" // the running binary, even if replaced on disk since
	cmd.Env = []string{usernsHolderEnv + "=1"}
	cmd.Stdin = pr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(r.UID), Size: int(r.Size)}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(r.GID), Size: int(r.Size)}},
		Pdeathsig:   syscall.SIGKILL,
	}
	err = cmd.Start()
	pr.Close()
	if err != nil {
		return nil, fmt.Errorf("start a process in a new user namespace: %w", err)
	}
	defer func() { pw.Close(); _ = cmd.Wait() }()
	ns, err := os.Open("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/user")
	if err != nil {
		return nil, fmt.Errorf("open the new user namespace: %w", err)
	}
	return ns, nil
}

// usernsCache keeps one user namespace per range: creating one costs a
// process start, and ranges are reused (idRanges hands out freed ones first).
type usernsCache struct {
	mu sync.Mutex
	ns map[idRange]*os.File

	prog    unshareRunner // first choice: no helper, no copy of the server
	makerMu sync.Mutex    // one request at a time to the helper
	maker   usernsMaker

	log      *slog.Logger // says once that the program could not be used; nil: quiet
	warnOnce sync.Once
}

// make runs unshareProgram for the namespace; where it cannot run or
// fails, it asks the helper (usernsMaker), or makes it here where the
// helper cannot.
func (c *usernsCache) make(r idRange) (*os.File, error) {
	f, err := c.prog.make(r)
	if err == nil {
		return f, nil
	}
	if c.log != nil {
		c.warnOnce.Do(func() {
			c.log.Info("user namespaces come from the helper process (a few ms of CPU more per new uid range)", "err", err)
		})
	}
	c.makerMu.Lock()
	f, err = c.maker.make(r)
	c.makerMu.Unlock()
	if err == nil {
		return f, nil
	}
	return newUserNS(r)
}

// get makes the namespace without holding the lock: a host filling up with
// sandboxes needs a new one at every create, and concurrent creates waited
// for each other's process starts here (at density 300, 10 at a time, the
// lease step took p50 16-150 ms against 3 ms for one create alone; the
// helper's requests, one at a time, are a fork of a small process each). A
// range is leased to one sandbox at a time, so two makers of the same range
// are rare; the loser closes its copy.
func (c *usernsCache) get(r idRange) (*os.File, error) {
	c.mu.Lock()
	f := c.ns[r]
	c.mu.Unlock()
	if f != nil {
		return f, nil
	}
	f, err := c.make(r)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if had := c.ns[r]; had != nil {
		f.Close()
		return had, nil
	}
	if c.ns == nil {
		c.ns = map[idRange]*os.File{}
	}
	c.ns[r] = f
	return f, nil
}

// idmapClone returns a detached, read-only mount of src (open_tree) whose
// ids are shifted through userns: on-disk id n appears as host id base+n.
func idmapClone(src string, userns *os.File) (int, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("clone mount of %s: %w", src, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_RDONLY, Userns_fd: uint64(userns.Fd())}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EINVAL) {
			return -1, fmt.Errorf("idmap %s: %w (its filesystem cannot be idmapped: it must be a directory on ext4, xfs, btrfs or tmpfs, not an overlay mount; pass an overlay's layers instead)", src, err)
		}
		return -1, fmt.Errorf("idmap %s: %w", src, err)
	}
	return fd, nil
}

// chownTree gives uid:gid every file under root, root included, without
// following symbolic links. The tree must be one only the host writes while
// this runs (a sandbox's bind-mount source before the sandbox starts).
// chown clears set-user-ID and set-group-ID bits; they are put back.
func chownTree(root string, uid, gid int) error {
	return filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return lchownKeepMode(path, e, uid, gid)
	})
}

func lchownKeepMode(path string, e fs.DirEntry, uid, gid int) error {
	var mode fs.FileMode
	if e.Type().IsRegular() {
		fi, err := e.Info()
		if err != nil {
			return err
		}
		mode = fi.Mode()
	}
	if err := os.Lchown(path, uid, gid); err != nil {
		return err
	}
	if mode&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
		return os.Chmod(path, mode)
	}
	return nil
}

// prepareNetNS readies the network namespace at nsPath for a sandbox.
//
// Root in a user namespace holds no capability over a network namespace
// the host made, so two things that relied on capabilities are opened up
// there: binding ports below 1024 (CAP_NET_BIND_SERVICE) and ping, which
// without CAP_NET_RAW uses ICMP datagram sockets, allowed to the groups in
// ping_group_range (host gids: sandboxes' are above 2^30). The network
// package may set the same values when it makes the namespace; writing
// them again is harmless.
//
// For the same reason such a root cannot mount sysfs (the kernel wants
// CAP_SYS_ADMIN over the network namespace): runc then fails and crun
// falls back to the host's /sys, which lists every interface of the host.
// With sysfsAt set, a sysfs of the sandbox's namespace is mounted there,
// from a thread inside it, for the runtime to bind at /sys.
func prepareNetNS(nsPath, sysfsAt string) error {
	return inNetNS(nsPath, func() error {
		// A procfs of its own (procsys): through the host's /proc, the
		// first lookup in a namespace costs more with every sandbox running.
		root, err := procsys.Open()
		if err != nil {
			return fmt.Errorf("in %s: %w", nsPath, err)
		}
		defer root.Close()
		var errs []error
		for _, s := range netSysctls {
			if err := root.Write(s.path, s.value); err != nil {
				errs = append(errs, fmt.Errorf("in %s: %w", nsPath, err))
			}
		}
		if sysfsAt != "" {
			if err := os.Mkdir(sysfsAt, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				errs = append(errs, err)
			} else if err := unix.Mount("sysfs", sysfsAt, "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
				errs = append(errs, fmt.Errorf("mount the sysfs of %s: %w", nsPath, err))
			}
		}
		return errors.Join(errs...)
	})
}

var netSysctls = []struct{ path, value string }{
	{"sys/net/ipv4/ip_unprivileged_port_start", "0"},
	{"sys/net/ipv4/ping_group_range", "0 2147483647"},
}

// inNetNS runs fn on a thread inside the network namespace at nsPath.
func inNetNS(nsPath string, fn func() error) error {
	target, err := os.Open(nsPath)
	if err != nil {
		return err
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread enters the namespace; if it cannot leave it again, it
		// stays locked and dies with this goroutine.
		goruntime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			goruntime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			goruntime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", nsPath, err)
			return
		}
		ferr := fn()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			goruntime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// checkUserNS checks, once at start-up, everything a sandbox in a user
// namespace needs from this host, so that a missing piece is reported
// clearly instead of as a failed sandbox start.
func (d *Driver) checkUserNS() error {
	r := slotRange(0)
	ns, err := d.nsc.make(r) // as sandboxes will
	if err != nil {
		return fmt.Errorf("cannot create a user namespace (%w): the kernel needs CONFIG_USER_NS and "+
			"sysctl user.max_user_namespaces > 0", err)
	}
	defer ns.Close()
	probe, err := os.MkdirTemp(d.cfg.SandboxDir, ".userns-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(probe)
	if err := os.Chmod(probe, 0o711); err != nil { // as a sandbox dir
		return err
	}
	dir := func(name string) string { return filepath.Join(probe, name) }
	if err := os.Mkdir(dir("lower"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir("lower"), "f"), nil, 0o644); err != nil {
		return err
	}
	// Detached layers first (Linux 6.15 and later), else attached ones.
	var errs []error
	for _, detached := range []bool{true, false} {
		err := mountLayers(context.Background(), sandboxPaths{dir: dir("sandbox")},
			layers{lower: []string{dir("lower")}, diskMB: 1, ids: &r, userns: ns, detached: detached})
		if err == nil {
			var st unix.Stat_t
			err = unix.Stat(filepath.Join(sandboxPaths{dir: dir("sandbox")}.rootfs(), "f"), &st)
			if err == nil && st.Uid != r.UID {
				err = fmt.Errorf("an overlay on an idmapped layer shows owner %d for a file of root, want %d", st.Uid, r.UID)
			}
		}
		uerr := unmountLayers(sandboxPaths{dir: dir("sandbox")})
		_ = os.RemoveAll(dir("sandbox"))
		if err == nil && uerr == nil {
			d.detachedLayers = detached
			return d.checkTraversable(dir("sandbox"), &r)
		}
		errs = append(errs, errors.Join(err, uerr))
	}
	return fmt.Errorf("overlayfs refuses idmapped lower layers (Linux 5.19 or later is needed): %w", errors.Join(errs...))
}

// checkTraversable checks that the sandbox's root (host uid ids.UID) can
// reach path: every directory above it must let others search it. The OCI
// runtime makes the sandbox's mounts as that user.
func (d *Driver) checkTraversable(path string, ids *idRange) error {
	// Directories searchable by everyone are cached once their whole chain
	// up to / is; the answer for others depends on ids.
	var chain []string
	forAll := true
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		if _, ok := d.traversable.Load(dir); ok {
			break
		}
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			return fmt.Errorf("stat %s: %w", dir, err)
		}
		switch {
		case st.Mode&0o001 != 0:
			chain = append(chain, dir)
		case st.Uid == ids.UID && st.Mode&0o100 != 0, st.Gid == ids.GID && st.Mode&0o010 != 0:
			forAll = false
		default:
			return errdefs.Precondition("%s (mode %o) is not searchable by other users, and root in a sandbox "+
				"is one (host uid %d, user namespaces): it cannot reach %s. Run chmod o+x %s (its files stay "+
				"unreadable to others), or start sbx with --userns=false", dir, st.Mode&0o7777, ids.UID, path, dir)
		}
		if dir == "/" {
			break
		}
	}
	if forAll {
		for _, dir := range chain {
			d.traversable.Store(dir, true)
		}
	}
	return nil
}
