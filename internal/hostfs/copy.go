package hostfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/sbxdev/sbx/internal/errdefs"
	"golang.org/x/sys/unix"
)

// CopyEntry copies name (one component) of src to dstName in dst: a
// directory with everything beneath it, a regular file, or a symlink as a
// symlink (never followed). Modes, special bits and modification times are
// kept; owners are the caller's. What exists at dstName is replaced, except
// a directory, into which a directory is merged. Device nodes, FIFOs and
// sockets are skipped (skip reports each, may be nil).
func CopyEntry(src *Dir, name string, dst *Dir, dstName string, skip func(string)) error {
	st, err := src.Lstat(name)
	if err != nil {
		return err
	}
	return copyOne(src, name, st, dst, dstName, skip, 0)
}

// MaxCopyDepth is how deep a tree CopyEntry and CopyTree copy. Each level
// holds three descriptors while its subtree is copied, so a tree a tenant
// nests a hundred thousand levels deep must fail with a clear error before
// it exhausts the server's descriptors. PATH_MAX (4096) already keeps most
// tools from working on deeper trees.
const MaxCopyDepth = 256

// ErrTooDeep is returned when a copied tree nests deeper than MaxCopyDepth.
// The tree is a tenant's (a build context), so it is invalid input (a 400)
// whose message, without the host path wrapped around it, says what to do.
var ErrTooDeep = errdefs.Invalid("directory tree nests deeper than %d levels; flatten it", MaxCopyDepth)

// CopyTree merges the contents of src into dst (as CopyEntry for each),
// reading src a batch at a time so a wide directory is never held whole.
func CopyTree(src, dst *Dir, skip func(string)) error {
	return copyTree(src, dst, skip, 0)
}

func copyTree(src, dst *Dir, skip func(string), depth int) error {
	r, err := src.Reader()
	if err != nil {
		return err
	}
	defer r.Close()
	for {
		names, err := r.Names(dirBatch)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, name := range names {
			st, err := src.Lstat(name)
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			if err != nil {
				return err
			}
			if err := copyOne(src, name, st, dst, name, skip, depth); err != nil {
				return err
			}
		}
	}
}

func copyOne(src *Dir, name string, st unix.Stat_t, dst *Dir, dstName string, skip func(string), depth int) error {
	mtime := timeOf(st.Mtim)
	perm := permOf(st.Mode)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if depth >= MaxCopyDepth {
			return fmt.Errorf("copy %s/%s: %w", src.Path(), name, ErrTooDeep)
		}
		if err := replaceNonDir(dst, dstName); err != nil {
			return err
		}
		if err := dst.Mkdir(dstName, 0o700); err != nil {
			return err
		}
		from, err := src.Sub(name)
		if err != nil {
			return err
		}
		defer from.Close()
		to, err := dst.Sub(dstName)
		if err != nil {
			return err
		}
		defer to.Close()
		if err := copyTree(from, to, skip, depth+1); err != nil {
			return err
		}
		if err := to.Chmod(perm); err != nil {
			return err
		}
	case unix.S_IFREG:
		if err := replace(dst, dstName); err != nil {
			return err
		}
		in, err := src.Open(name)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := dst.Create(dstName, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(out, in)
		if err == nil {
			err = out.Chmod(perm) // fchmod; after the write, so no setuid file is ever writable
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("copy %s: %w", src.Path()+"/"+name, err)
		}
	case unix.S_IFLNK:
		target, err := src.Readlink(name)
		if err != nil {
			return err
		}
		if err := replace(dst, dstName); err != nil {
			return err
		}
		if err := dst.Symlink(target, dstName); err != nil {
			return err
		}
	default:
		if skip != nil {
			skip(src.Path() + "/" + name)
		}
		return nil
	}
	return dst.Chtimes(dstName, mtime, mtime)
}

// replace removes what dst holds at name unless it is a directory, which
// cannot be replaced by a file.
func replace(dst *Dir, name string) error {
	st, err := dst.Lstat(name)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return &os.PathError{Op: "replace", Path: dst.Path() + "/" + name, Err: errors.New("is a directory and cannot be replaced by a file")}
	}
	return dst.Remove(name)
}

// replaceNonDir removes what dst holds at name unless it is a directory.
func replaceNonDir(dst *Dir, name string) error {
	st, err := dst.Lstat(name)
	if errors.Is(err, unix.ENOENT) || (err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR) {
		return nil
	}
	if err != nil {
		return err
	}
	return dst.Remove(name)
}

// permOf converts st_mode's permission and special bits to an fs.FileMode.
func permOf(mode uint32) fs.FileMode {
	out := fs.FileMode(mode & 0o777)
	if mode&unix.S_ISUID != 0 {
		out |= fs.ModeSetuid
	}
	if mode&unix.S_ISGID != 0 {
		out |= fs.ModeSetgid
	}
	if mode&unix.S_ISVTX != 0 {
		out |= fs.ModeSticky
	}
	return out
}
