package oci

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mountLayers mounts the sandbox's writable layer (a tmpfs, so the disk
// limit is enforced by the kernel and deleting a sandbox frees its space at
// once) and the overlay root on top of the template's layers. A non-empty
// upperFrom is copied in as the writable layer's content.
func mountLayers(ctx context.Context, p sandboxPaths, lower []string, diskMB int, upperFrom string) error {
	if diskMB == 0 {
		diskMB = DefaultDiskMB
	}
	for _, dir := range []string{p.upperMount(), p.rootfs()} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	opts := "size=" + strconv.Itoa(diskMB) + "m,mode=0755"
	if err := unix.Mount("tmpfs", p.upperMount(), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount writable layer tmpfs (%s) at %s: %w", opts, p.upperMount(), err)
	}
	if upperFrom != "" { // restore of a checkpoint: its saved writable layer
		if err := copyTree(ctx, upperFrom, p.upper()); err != nil {
			return fmt.Errorf("restore writable layer: %w", err)
		}
	} else if err := os.Mkdir(p.upper(), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(p.work(), 0o755); err != nil {
		return err
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

// unmountLayers detaches the overlay and then the tmpfs. It tolerates
// either being absent so that cleanup can be repeated; it refuses to report
// success while something is still mounted, because the caller removes the
// directory tree next.
func unmountLayers(p sandboxPaths) error {
	for _, dir := range []string{p.rootfs(), p.upperMount()} {
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
	}
	return nil
}
