package oci

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/runtime"
)

// volsDir holds the idmapped clones of a sandbox's IDMapped mounts.
func (p sandboxPaths) volsDir() string { return filepath.Join(p.dir, "vols") }

// attachIDMapped replaces the source of each IDMapped mount by a writable
// idmapped clone of it (ids on disk shifted into the sandbox's range, so
// the sandbox's root owns what root owns on disk; nosuid, nodev) attached
// under the sandbox's dir, where the sandbox's unprivileged host uid can
// reach it. Without a user namespace the source is bound as it is.
func attachIDMapped(ms []runtime.Mount, p sandboxPaths, userns *os.File) ([]runtime.Mount, error) {
	out := slices.Clone(ms)
	for i, m := range out {
		if !m.IDMapped || userns == nil {
			continue
		}
		fd, err := unix.OpenTree(unix.AT_FDCWD, m.Source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err != nil {
			return nil, fmt.Errorf("clone mount of %s: %w", m.Source, err)
		}
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV,
			Userns_fd: uint64(userns.Fd())}
		err = unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr)
		if err == nil {
			dst := filepath.Join(p.volsDir(), strconv.Itoa(i))
			if err = os.MkdirAll(dst, 0o711); err == nil {
				err = unix.MoveMount(fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH)
			}
			out[i].Source = dst
		}
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("idmapped mount of %s: %w", m.Source, err)
		}
	}
	return out, nil
}

// detachVolumes unmounts the clones attachIDMapped made. It must succeed
// before the sandbox's dir is removed: removing it with a volume still
// attached would delete the volume's content.
func detachVolumes(p sandboxPaths) error {
	entries, err := os.ReadDir(p.volsDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		errs = append(errs, unmountAll(filepath.Join(p.volsDir(), e.Name())))
	}
	return errors.Join(errs...)
}
