package oci

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// layers says how to build a sandbox's root filesystem.
type layers struct {
	lower     []string // read-only layers, topmost first
	diskMB    int      // size of the writable layer; 0 = DefaultDiskMB
	upperFrom string   // copied in as the writable layer's content ("" = empty)
	// ids and userns are set for a sandbox in a user namespace: the lower
	// layers are mounted idmapped through userns and the writable layer
	// belongs to the sandbox's root.
	ids    *idRange
	userns *os.File
	// detached hands the idmapped layers to overlayfs as detached mounts
	// (/proc/self/fd/N, Linux 6.15 and later); otherwise they are attached
	// under the sandbox dir first. checkUserNS finds out which works.
	detached bool
}

// mountLayers mounts the sandbox's writable layer (a tmpfs, so the disk
// limit is enforced by the kernel and deleting a sandbox frees its space at
// once) and the overlay root on top of the template's layers.
//
// The tmpfs is charged to the memory cgroup of whoever writes it, so a
// sandbox filling its disk uses its own memory limit, not the host's: with
// a disk limit above the memory limit it ends in the OOM killer inside its
// cgroup (reported as an exit with reason oom), never in host memory
// pressure. The memory+swap limit (spec.go) keeps it from swapping out.
func mountLayers(ctx context.Context, p sandboxPaths, l layers) error {
	diskMB := l.diskMB
	if diskMB == 0 {
		diskMB = DefaultDiskMB
	}
	// One mkdir each, parent first (SandboxDir exists): MkdirAll would
	// stat each path and its parent before. A sandbox in a user namespace
	// has its dir already (leaseIDs), a retried restore all of them.
	for _, dir := range []string{p.dir, p.upperMount()} {
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	opts := "size=" + strconv.Itoa(diskMB) + "m,mode=0755"
	if err := unix.Mount("tmpfs", p.upperMount(), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount writable layer tmpfs (%s) at %s: %w", opts, p.upperMount(), err)
	}
	if l.upperFrom != "" { // restore of a checkpoint: its saved writable layer
		if err := copyTree(ctx, l.upperFrom, p.upper()); err != nil {
			return fmt.Errorf("restore writable layer: %w", err)
		}
	} else if err := os.Mkdir(p.upper(), 0o755); err != nil {
		return err
	}
	for _, dir := range []string{p.work(), p.rootfs()} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
	}
	lower := l.lower
	if l.ids != nil {
		for _, dir := range []string{p.upper(), p.work()} {
			if err := os.Lchown(dir, int(l.ids.UID), int(l.ids.GID)); err != nil {
				return fmt.Errorf("give the writable layer to the sandbox's root: %w", err)
			}
		}
		fds, err := idmapLayers(l.lower, l.userns)
		// The overlay holds private clones of its layers' mounts (idmap
		// included), so ours can go as soon as it is mounted. Dropping a
		// mount waits for an RCU grace period (milliseconds): off the
		// start's path.
		defer func() {
			go func() {
				for _, fd := range fds {
					unix.Close(fd)
				}
				if !l.detached {
					_ = detachLowers(p)
				}
			}()
		}()
		if err != nil {
			return err
		}
		if lower, err = layerPaths(p, fds, l.detached); err != nil {
			return err
		}
	}
	data := "lowerdir=" + strings.Join(lower, ":") + ",upperdir=" + p.upper() + ",workdir=" + p.work()
	if len(data) >= os.Getpagesize() {
		return fmt.Errorf("overlay options for %d layers exceed one page; flatten the template", len(lower))
	}
	if err := unix.Mount("overlay", p.rootfs(), "overlay", 0, data); err != nil {
		return fmt.Errorf("mount overlay root at %s (%s): %w", p.rootfs(), data, err)
	}
	return nil
}

// idmapLayers makes an idmapped, read-only detached mount of each layer.
// On failure it returns the ones made so far, for the caller to close.
func idmapLayers(lower []string, userns *os.File) ([]int, error) {
	fds := make([]int, 0, len(lower))
	for i, src := range lower {
		fd, err := idmapClone(src, userns)
		if err != nil {
			return fds, fmt.Errorf("root filesystem layer %d: %w", i, err)
		}
		fds = append(fds, fd)
	}
	return fds, nil
}

// layerPaths returns the paths the overlay takes the idmapped layers by:
// the detached mounts themselves, or mount points they are attached at
// (<sandbox>/lower/<i>).
func layerPaths(p sandboxPaths, fds []int, detached bool) ([]string, error) {
	out := make([]string, len(fds))
	for i, fd := range fds {
		if detached {
			out[i] = "/proc/self/fd/" + strconv.Itoa(fd)
			continue
		}
		dst := p.lower(i)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return nil, err
		}
		if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return nil, fmt.Errorf("attach idmapped layer %d at %s: %w", i, dst, err)
		}
		out[i] = dst
	}
	return out, nil
}

// detachLowers unmounts whatever is mounted under <sandbox>/lower.
func detachLowers(p sandboxPaths) error {
	entries, err := os.ReadDir(p.lowerDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		errs = append(errs, unmountAll(filepath.Join(p.lowerDir(), e.Name())))
	}
	return errors.Join(errs...)
}

// unmountLayers detaches the sandbox's sysfs (prepareNetNS), the overlay,
// any idmapped layers and then the tmpfs. It tolerates each being absent so that cleanup can be repeated;
// it refuses to report success while something is still mounted, because
// the caller removes the directory tree next.
func unmountLayers(p sandboxPaths) error {
	if err := detachVolumes(p); err != nil {
		return err
	}
	for _, dir := range []string{p.sysfs(), p.legacySysfs(), p.rootfs(), p.legacyRootfs()} {
		if err := unmountAll(dir); err != nil {
			return err
		}
	}
	if err := detachLowers(p); err != nil {
		return err
	}
	return unmountAll(p.upperMount())
}

func unmountAll(dir string) error {
	// A failed start retried by hand may have stacked mounts; peel them.
	for range 8 {
		err := unix.Unmount(dir, unix.MNT_DETACH)
		if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
		if err != nil || !isMountpoint(dir) {
			break
		}
	}
	if isMountpoint(dir) {
		return fmt.Errorf("unmount %s: still mounted", dir)
	}
	return nil
}
