package hostfs

// Writing trees beneath a Dir: what an archive extractor and a copy of a
// build context need, each operation relative to a directory descriptor and
// on a single name, so nothing the tree holds (a symlink, a hard link, a
// planted mount) can send the host elsewhere.

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrSymlink is returned when a path goes through a symlink where only
// real directories are allowed.
var ErrSymlink = errors.New("goes through a symlink")

// ErrNotDir is returned when a path goes through something that is not a
// directory.
var ErrNotDir = errors.New("goes through something that is not a directory")

// Sub opens the directory name (a relative path, possibly of several
// components) strictly beneath d: no symlink on the way or at its end.
func (d *Dir) Sub(name string) (*Dir, error) {
	if name == "" || name == "." {
		return d.dup()
	}
	// No O_NOFOLLOW: with it a trailing symlink would fail as "not a
	// directory"; without it RESOLVE_NO_SYMLINKS refuses it with ELOOP.
	fd, err := d.openat(name, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, classify(err)
	}
	return &Dir{fd: fd, parent: d, name: name}, nil
}

// SubInRoot opens the directory name resolved as if d were the root
// directory: symlinks are followed, but an absolute target or ".." never
// gets above d (openat2 RESOLVE_IN_ROOT). This is how a build context's own
// symlinks resolve — inside the context, never on the host.
func (d *Dir) SubInRoot(name string) (*Dir, error) {
	if name == "" || name == "." {
		return d.dup()
	}
	fd, err := d.openIn(name, unix.O_PATH|unix.O_DIRECTORY, unix.RESOLVE_IN_ROOT|unix.RESOLVE_NO_MAGICLINKS|unix.RESOLVE_NO_XDEV)
	if err != nil {
		return nil, err
	}
	return &Dir{fd: fd, parent: d, name: name}, nil
}

func (d *Dir) dup() (*Dir, error) {
	fd, err := unix.FcntlInt(uintptr(d.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "dup", Path: d.Path(), Err: err}
	}
	return &Dir{fd: fd, parent: d.parent, name: d.name}, nil
}

func (d *Dir) openIn(name string, flags int, res uint64) (int, error) {
	return d.openat2(name, &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: res})
}

// classify turns the errno of a refused lookup into ErrSymlink or
// ErrNotDir, keeping the path.
func classify(err error) error {
	var pe *os.PathError
	if !errors.As(err, &pe) {
		return err
	}
	switch {
	case errors.Is(pe.Err, unix.ELOOP):
		return &os.PathError{Op: pe.Op, Path: pe.Path, Err: ErrSymlink}
	case errors.Is(pe.Err, unix.ENOTDIR):
		return &os.PathError{Op: pe.Op, Path: pe.Path, Err: ErrNotDir}
	}
	return err
}

// MkdirAll opens the directory name beneath d, creating what is missing of
// it with perm (before the umask). A symlink on the way fails with
// ErrSymlink, anything else that is not a directory with ErrNotDir, in an
// *os.PathError whose Path is the offending component relative to d.
func (d *Dir) MkdirAll(name string, perm os.FileMode) (*Dir, error) {
	name = strings.Trim(name, "/")
	if name == "" || name == "." {
		return d.dup()
	}
	// Usually the directory exists (an archive lists a directory's
	// entries together): one lookup. Else walk it component by component,
	// creating what is missing and naming what is in the way.
	if sub, err := d.Sub(name); err == nil {
		return sub, nil
	}
	cur, err := d.dup()
	if err != nil {
		return nil, err
	}
	parts := strings.Split(name, "/")
	for i, comp := range parts {
		next, err := cur.Sub(comp)
		if errors.Is(err, unix.ENOENT) {
			if merr := unix.Mkdirat(cur.fd, comp, uint32(perm.Perm())); merr != nil && !errors.Is(merr, unix.EEXIST) {
				cur.Close()
				return nil, &os.PathError{Op: "mkdirat", Path: cur.Path() + "/" + comp, Err: merr}
			}
			next, err = cur.Sub(comp)
		}
		cur.Close()
		if errors.Is(err, ErrSymlink) || errors.Is(err, ErrNotDir) {
			// Name the component relative to d: callers show it.
			return nil, &os.PathError{Op: "mkdir", Path: strings.Join(parts[:i+1], "/"), Err: errors.Unwrap(err)}
		}
		if err != nil {
			return nil, err
		}
		cur = next
	}
	return cur, nil
}

// Mkdir creates the directory name (one component) in d; an existing
// directory is fine.
func (d *Dir) Mkdir(name string, perm os.FileMode) error {
	if err := singleName(name); err != nil {
		return &os.PathError{Op: "mkdirat", Path: d.Path() + "/" + name, Err: err}
	}
	err := unix.Mkdirat(d.fd, name, uint32(perm.Perm()))
	if errors.Is(err, unix.EEXIST) {
		if st, serr := d.Stat(name); serr == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return nil
		}
	}
	if err != nil {
		return &os.PathError{Op: "mkdirat", Path: d.Path() + "/" + name, Err: err}
	}
	return nil
}

// Create creates name (one component) in d as a new regular file open for
// writing; it fails if anything exists there (O_EXCL, no link followed).
func (d *Dir) Create(name string, perm os.FileMode) (*os.File, error) {
	if err := singleName(name); err != nil {
		return nil, &os.PathError{Op: "create", Path: d.Path() + "/" + name, Err: err}
	}
	fd, err := d.openat(name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, uint32(perm.Perm()))
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), d.Path()+"/"+name), nil
}

// Symlink creates name (one component) in d as a symlink to target. The
// target is stored as given and never resolved by the host.
func (d *Dir) Symlink(target, name string) error {
	if err := singleName(name); err != nil {
		return &os.PathError{Op: "symlinkat", Path: d.Path() + "/" + name, Err: err}
	}
	if err := unix.Symlinkat(target, d.fd, name); err != nil {
		return &os.PathError{Op: "symlinkat", Path: d.Path() + "/" + name, Err: err}
	}
	return nil
}

// Readlink returns the target of the symlink name (one component) in d.
func (d *Dir) Readlink(name string) (string, error) {
	if err := singleName(name); err != nil {
		return "", &os.PathError{Op: "readlinkat", Path: d.Path() + "/" + name, Err: err}
	}
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(d.fd, name, buf)
		if err != nil {
			return "", &os.PathError{Op: "readlinkat", Path: d.Path() + "/" + name, Err: err}
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		if len(buf) >= unix.PathMax {
			return "", &os.PathError{Op: "readlinkat", Path: d.Path() + "/" + name, Err: unix.ENAMETOOLONG}
		}
		buf = make([]byte, 2*len(buf))
	}
}

// Link creates newName (one component) in d as a hard link to oldName (one
// component) in old. oldName must be a regular file: a symlink, a device
// or a directory is refused (linkat is called without AT_SYMLINK_FOLLOW,
// and the type is checked first).
func (d *Dir) Link(old *Dir, oldName, newName string) error {
	for _, n := range []string{oldName, newName} {
		if err := singleName(n); err != nil {
			return &os.PathError{Op: "linkat", Path: d.Path() + "/" + newName, Err: err}
		}
	}
	var st unix.Stat_t
	if err := unix.Fstatat(old.fd, oldName, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "fstatat", Path: old.Path() + "/" + oldName, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return &os.PathError{Op: "linkat", Path: old.Path() + "/" + oldName, Err: ErrNotRegular}
	}
	if err := unix.Linkat(old.fd, oldName, d.fd, newName, 0); err != nil {
		return &os.PathError{Op: "linkat", Path: d.Path() + "/" + newName, Err: err}
	}
	return nil
}

// Lstat returns the status of name (one component) in d itself, a symlink
// not followed.
func (d *Dir) Lstat(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := singleName(name); err != nil {
		return st, &os.PathError{Op: "fstatat", Path: d.Path() + "/" + name, Err: err}
	}
	if err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, &os.PathError{Op: "fstatat", Path: d.Path() + "/" + name, Err: err}
	}
	return st, nil
}

// Chtimes sets the access and modification times of name (one component)
// in d, a symlink itself rather than its target.
func (d *Dir) Chtimes(name string, atime, mtime time.Time) error {
	if err := singleName(name); err != nil {
		return &os.PathError{Op: "utimensat", Path: d.Path() + "/" + name, Err: err}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	if err := unix.UtimesNanoAt(d.fd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: d.Path() + "/" + name, Err: err}
	}
	return nil
}

// Lchown sets the owner of name (one component) in d, a symlink itself
// rather than its target.
func (d *Dir) Lchown(name string, uid, gid int) error {
	if err := singleName(name); err != nil {
		return &os.PathError{Op: "fchownat", Path: d.Path() + "/" + name, Err: err}
	}
	if err := unix.Fchownat(d.fd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "fchownat", Path: d.Path() + "/" + name, Err: err}
	}
	return nil
}

// Chmod sets the mode of d itself (special bits included).
func (d *Dir) Chmod(mode os.FileMode) error {
	fd, err := unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: d.Path(), Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Fchmod(fd, unixMode(mode)); err != nil {
		return &os.PathError{Op: "fchmod", Path: d.Path(), Err: err}
	}
	return nil
}

// unixMode converts an fs.FileMode's permission and special bits.
func unixMode(m os.FileMode) uint32 {
	out := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		out |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		out |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		out |= unix.S_ISVTX
	}
	return out
}

// DirEntry is a name in a directory and the type of what it names.
type DirEntry struct {
	Name string
	Mode uint32 // st_mode (type and permission bits), of the entry itself
	Size int64
	Mtim time.Time
}

// IsDir reports whether the entry is a directory.
func (e DirEntry) IsDir() bool { return e.Mode&unix.S_IFMT == unix.S_IFDIR }

// ReadDir lists the whole of d, sorted by name, with each entry's own
// status (symlinks not followed). It holds every name at once: only for a
// directory the host owns or one whose size is capped elsewhere; a
// directory a sandbox can write is read with ReadDirN or Reader.
func (d *Dir) ReadDir() ([]DirEntry, error) {
	r, err := d.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out []DirEntry
	for {
		batch, err := r.Next(dirBatch)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		out = append(out, batch...)
	}
	slices.SortFunc(out, func(a, b DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func timeOf(ts unix.Timespec) time.Time { return time.Unix(ts.Unix()) }
