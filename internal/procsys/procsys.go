// Package procsys writes the sysctls of the calling thread's network
// namespace through a procfs instance of its own.
//
// Every network namespace that looks up /proc/sys/net through the host's
// /proc leaves a dentry named "net" under /proc/sys, and all of them sit in
// one dcache hash chain (same parent, same name); the kernel tells them
// apart with proc_sys_compare, which takes the global sysctl lock for each
// entry. A lookup from a new namespace walks the whole chain (twice, as a
// miss), so with a thousand sandboxes every create paid about a thousand
// locked compares per sysctl path, and ten concurrent creates contended for
// that lock (2.4 ms of server CPU per create at 1,000 sandboxes against 0.4
// at 100, docs/performance.md). A detached procfs mount (fsopen/fsmount, no
// mount point, gone when closed) has its own dentries: the chain holds one
// entry.
package procsys

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Root is a procfs root to open sysctl files under. Its lookups see the
// network namespace of the thread that makes them, not of the one that
// opened the Root.
type Root struct {
	fd      int
	private bool
}

// Open mounts a private procfs, detached from every mount tree. Where the
// new mount API is refused (an old kernel, a seccomp filter, no
// CAP_SYS_ADMIN), it falls back to the host's /proc: slower at density,
// the same values.
func Open() (*Root, error) {
	if fd, err := mountPrivate(); err == nil {
		return &Root{fd: fd, private: true}, nil
	}
	fd, err := unix.Open("/proc", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /proc: %w", err)
	}
	return &Root{fd: fd}, nil
}

// mountPrivate is a variable for the tests of the fallback.
var mountPrivate = privateProc

func privateProc() (int, error) {
	fsfd, err := unix.Fsopen("proc", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen proc: %w", err)
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("create a procfs: %w", err)
	}
	// Not read-only: a write open on a read-only mount fails (EROFS)
	// whatever the file. Nothing else holds this mount.
	fd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC,
		unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	if err != nil {
		return -1, fmt.Errorf("mount a procfs: %w", err)
	}
	return fd, nil
}

// Private reports whether r is a procfs of its own (false: the host's /proc).
func (r *Root) Private() bool { return r.private }

// Write sets a sysctl, name relative to /proc ("sys/net/ipv4/...").
func (r *Root) Write(name, value string) error {
	return WriteAt(r.fd, name, value, "/proc/"+name)
}

// WriteAt writes value to the sysctl file name under the directory fd dir
// (or AT_FDCWD) with plain system calls, as it is on the create path (the
// extra work of os.WriteFile doubles the cost); errors call it shown.
func WriteAt(dir int, name, value, shown string) error {
	fd, err := unix.Openat(dir, name, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("set %s: %w", shown, err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(value)); err != nil {
		return fmt.Errorf("set %s to %q: %w", shown, value, err)
	}
	return nil
}

// Close unmounts a private procfs (it has no other reference).
func (r *Root) Close() error { return unix.Close(r.fd) }
