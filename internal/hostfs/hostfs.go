// Package hostfs is how the host touches a directory that sandbox or tenant
// code can write (a sandbox's run dir, a build's scratch dir, an extracted
// upload): never by resolving a path in it, always relative to a directory
// file descriptor with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), so a
// symlink, a magic link or a mount planted inside cannot send the host
// elsewhere. Every read is capped, and nothing but a regular file (or, for
// DialUnix, a socket) is opened.
package hostfs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNotRegular is returned when a name is not a regular file (a FIFO, a
// device, a directory, or a socket where a file was wanted).
var ErrNotRegular = errors.New("not a regular file")

// ErrTooLarge is returned by ReadFile when a file exceeds the cap.
var ErrTooLarge = errors.New("file too large")

// resolve is what every lookup below a Dir allows: no symlinks at all, no
// /proc magic links, no escape through "..", no crossing into another mount.
const resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// Dir is an open directory the host must not resolve paths in by name.
// The directory itself is opened by a path the host controls; what is
// inside it may be anybody's.
type Dir struct {
	fd int
	// parent and name give the path, for messages only. A directory
	// opened beneath another keeps a pointer instead of its whole path,
	// so a deep tree costs memory linear in its depth, not quadratic.
	// OpenDir's Dir has no parent and its full path as name.
	parent *Dir
	name   string
}

// OpenDir opens a directory whose own path the host controls (every
// component of path is the host's); its last component must not be a
// symlink.
func OpenDir(path string) (*Dir, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return &Dir{fd: fd, name: path}, nil
}

// Path is the path the directory was opened by (for messages).
func (d *Dir) Path() string {
	n := -1 // no separator before the first name
	for p := d; p != nil; p = p.parent {
		n += len(p.name) + 1
	}
	b := make([]byte, n)
	for p := d; p != nil; p = p.parent {
		n -= len(p.name)
		copy(b[n:], p.name)
		if n > 0 {
			n--
			b[n] = '/'
		}
	}
	return string(b)
}

// Close releases the directory's descriptor.
func (d *Dir) Close() error { return unix.Close(d.fd) }

// openat opens name (a path relative to d, possibly with several
// components) strictly beneath d.
func (d *Dir) openat(name string, flags int, mode uint32) (int, error) {
	return d.openat2(name, &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode), Resolve: resolve})
}

// maxOpenRetries bounds the retries of openat2's EAGAIN, which the kernel
// returns when any rename or mount anywhere raced the lookup: a sandbox
// renaming in a loop must not keep a host request spinning.
const maxOpenRetries = 64

func (d *Dir) openat2(name string, how *unix.OpenHow) (int, error) {
	var err error
	for range maxOpenRetries {
		var fd int
		fd, err = unix.Openat2(d.fd, name, how)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil {
			break
		}
		return fd, nil
	}
	return -1, &os.PathError{Op: "openat2", Path: d.Path() + "/" + name, Err: err}
}

// Stat returns the status of name without following anything.
func (d *Dir) Stat(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := d.openat(name, unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	if err := unix.Fstat(fd, &st); err != nil {
		return st, &os.PathError{Op: "fstat", Path: d.Path() + "/" + name, Err: err}
	}
	return st, nil
}

// Open opens a regular file beneath d for reading. O_NONBLOCK keeps a
// planted FIFO from blocking the open; anything but a regular file fails
// with ErrNotRegular.
func (d *Dir) Open(name string) (*os.File, error) {
	fd, err := d.openat(name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "fstat", Path: d.Path() + "/" + name, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, &os.PathError{Op: "open", Path: d.Path() + "/" + name, Err: ErrNotRegular}
	}
	return os.NewFile(uintptr(fd), d.Path()+"/"+name), nil
}

// ReadFile reads a regular file beneath d, at most max bytes; a longer
// file fails with ErrTooLarge.
func (d *Dir) ReadFile(name string, max int64) ([]byte, error) {
	f, err := d.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, &os.PathError{Op: "read", Path: f.Name(), Err: fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)}
	}
	return b, nil
}

// WriteFile replaces name (a single component) with a new regular file
// holding data: it writes a fresh file under a random name with O_EXCL and
// renames it over name, so whatever name was (a symlink, a hard link to
// something else, a FIFO) is replaced, never written through.
func (d *Dir) WriteFile(name string, data []byte, perm os.FileMode) error {
	if err := singleName(name); err != nil {
		return &os.PathError{Op: "write", Path: d.Path() + "/" + name, Err: err}
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := ".hostfs-" + hex.EncodeToString(rnd[:])
	fd, err := d.openat(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, uint32(perm.Perm()))
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), d.Path()+"/"+tmp)
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Chmod(perm.Perm()) // the umask may have narrowed it
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = unix.Renameat(d.fd, tmp, d.fd, name)
	}
	if werr != nil {
		_ = unix.Unlinkat(d.fd, tmp, 0)
		return &os.PathError{Op: "write", Path: d.Path() + "/" + name, Err: werr}
	}
	return nil
}

// Remove removes name (a file, a socket, a symlink or an empty directory)
// without following it. A missing name is not an error.
func (d *Dir) Remove(name string) error {
	if err := singleName(name); err != nil {
		return &os.PathError{Op: "unlinkat", Path: d.Path() + "/" + name, Err: err}
	}
	err := unix.Unlinkat(d.fd, name, 0)
	if errors.Is(err, unix.EISDIR) {
		err = unix.Unlinkat(d.fd, name, unix.AT_REMOVEDIR)
	}
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "unlinkat", Path: d.Path() + "/" + name, Err: err}
	}
	return nil
}

// DialUnix connects to the unix socket name beneath d. The socket file is
// opened with O_PATH (no symlinks) and checked to be a socket, then the
// connection goes through /proc/self/fd/N, the open inode itself: the
// name cannot be swapped between check and connect.
func (d *Dir) DialUnix(ctx context.Context, name string) (net.Conn, error) {
	fd, err := d.openat(name, unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: d.Path() + "/" + name, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, &os.PathError{Op: "dial", Path: d.Path() + "/" + name, Err: errors.New("not a unix socket")}
	}
	var dialer net.Dialer
	return dialer.DialContext(ctx, "unix", "/proc/self/fd/"+strconv.Itoa(fd))
}

// DialUnix connects to the socket name in the directory dir (a path the
// host controls) without following anything planted in dir.
func DialUnix(ctx context.Context, dir, name string) (net.Conn, error) {
	d, err := OpenDir(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.DialUnix(ctx, name)
}

// singleName refuses names that unlinkat and renameat would resolve
// through a directory (those calls have no RESOLVE_ flags).
func singleName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return fmt.Errorf("%q is not a single file name", name)
	}
	return nil
}
