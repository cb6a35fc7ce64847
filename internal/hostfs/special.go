package hostfs

import (
	"os"

	"golang.org/x/sys/unix"
)

// Setxattr sets an extended attribute of d itself (an overlay layer's
// opaque-directory mark, trusted.overlay.opaque).
func (d *Dir) Setxattr(name string, value []byte) error {
	fd, err := unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: d.Path(), Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Fsetxattr(fd, name, value, 0); err != nil {
		return &os.PathError{Op: "fsetxattr", Path: d.Path(), Err: err}
	}
	return nil
}

// MknodWhiteout creates name (one component) in d as an overlayfs whiteout:
// a character device 0/0, which hides the name in the layers below. It is
// the only device node the host makes from content it did not create.
func (d *Dir) MknodWhiteout(name string) error {
	if err := singleName(name); err != nil {
		return &os.PathError{Op: "mknodat", Path: d.Path() + "/" + name, Err: err}
	}
	if err := unix.Mknodat(d.fd, name, unix.S_IFCHR, 0); err != nil {
		return &os.PathError{Op: "mknodat", Path: d.Path() + "/" + name, Err: err}
	}
	return nil
}

// ChownSelf sets the owner of d itself.
func (d *Dir) ChownSelf(uid, gid int) error {
	if err := unix.Fchownat(d.fd, "", uid, gid, unix.AT_EMPTY_PATH); err != nil {
		return &os.PathError{Op: "fchownat", Path: d.Path(), Err: err}
	}
	return nil
}
