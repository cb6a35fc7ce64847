package oci

import (
	"context"
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
)

var _ runtime.LayerCapturer = (*Driver)(nil)

// CaptureLayer copies the sandbox's overlay upper dir (on its tmpfs) to
// dst. In a user namespace the sandbox wrote host ids (root inside is
// idRange.UID on the host), and a layer must hold the image's ids, which
// every later sandbox maps to its own range: the copy's ids are shifted
// back (shiftIDs).
func (d *Driver) CaptureLayer(ctx context.Context, id, dst string) error {
	if err := validateID(id); err != nil {
		return err
	}
	p := d.paths(id)
	h, err := readHandle(p)
	if err != nil {
		if _, serr := os.Stat(p.dir); serr != nil {
			return notFound(id)
		}
		return fmt.Errorf("capture layer of sandbox %s: %w", id, err)
	}
	if !isMountpoint(p.upperMount()) {
		return errdefs.Precondition("sandbox %s has no writable layer mounted (not running)", id)
	}
	if err := copyTree(ctx, p.upper(), dst); err != nil {
		return fmt.Errorf("capture layer of sandbox %s: %w", id, err)
	}
	if h.IDs != nil {
		if err := shiftIDs(dst, *h.IDs); err != nil {
			return fmt.Errorf("capture layer of sandbox %s: %w", id, err)
		}
	}
	return nil
}

// shiftIDs moves the owners of every file under root (a host-only copy,
// never a tree a sandbox can write) from r's host range back to the ids the
// sandbox saw: host uid r.UID+n becomes n. Ids outside the range were not
// made by the sandbox (overlayfs whiteouts, made as the host's root) and
// stay. Links are not followed. chown drops set-user-ID/set-group-ID bits
// and file capabilities; both are put back, a capability recorded for the
// sandbox's root (version 3, rootid r.UID) as one for any root (version 2),
// as it is in an image.
func shiftIDs(root string, r idRange) error {
	seen := map[uint64]bool{} // inodes with several links, shifted once
	return filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		if st.Nlink > 1 && !e.IsDir() {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		uid, gid := shiftID(st.Uid, r.UID, r.Size), shiftID(st.Gid, r.GID, r.Size)
		if uid == st.Uid && gid == st.Gid {
			return nil
		}
		var fcap []byte
		if e.Type().IsRegular() {
			fcap = fileCap(path, r.UID)
		}
		if err := os.Lchown(path, int(uid), int(gid)); err != nil {
			return err
		}
		if e.Type().IsRegular() && st.Mode&(syscall.S_ISUID|syscall.S_ISGID) != 0 {
			if err := unix.Chmod(path, st.Mode&0o7777); err != nil {
				return err
			}
		}
		if fcap != nil {
			if err := unix.Lsetxattr(path, "security.capability", fcap, 0); err != nil {
				return fmt.Errorf("restore file capability of %s: %w", path, err)
			}
		}
		return nil
	})
}

func shiftID(id, base, size uint32) uint32 {
	if id >= base && id-base < size {
		return id - base
	}
	return id
}

// File capability xattr layout (linux/capability.h): a little-endian
// magic_etc word whose top byte is the revision, then permitted and
// inheritable words (two each for revisions 2 and 3); revision 3 adds the
// uid of the namespace root the capability is for.
const (
	vfsCapRevisionMask = 0xFF000000
	vfsCapRevision2    = 0x02000000
	vfsCapRevision3    = 0x03000000
	vfsCapSize2        = 20
	vfsCapSize3        = 24
)

// fileCap returns path's security.capability as it must be stored in a
// layer (revision 2), or nil when it has none.
func fileCap(path string, rootUID uint32) []byte {
	buf := make([]byte, vfsCapSize3)
	n, err := unix.Lgetxattr(path, "security.capability", buf)
	if err != nil || n < vfsCapSize2 {
		return nil
	}
	b := buf[:n]
	magic := binary.LittleEndian.Uint32(b)
	if magic&vfsCapRevisionMask == vfsCapRevision3 && n == vfsCapSize3 &&
		binary.LittleEndian.Uint32(b[vfsCapSize2:]) == rootUID {
		v2 := append([]byte(nil), b[:vfsCapSize2]...)
		binary.LittleEndian.PutUint32(v2, magic&^vfsCapRevisionMask|vfsCapRevision2)
		return v2
	}
	return b
}
