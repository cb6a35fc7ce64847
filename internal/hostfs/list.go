package hostfs

import (
	"os"

	"golang.org/x/sys/unix"
)

// OpenFile opens the regular file name (one component) in d for writing,
// creating it with perm or truncating it; a symlink or anything but a
// regular file there is refused.
func (d *Dir) OpenFile(name string, perm os.FileMode) (*os.File, error) {
	if err := singleName(name); err != nil {
		return nil, err
	}
	fd, err := d.openat(name, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_NONBLOCK, uint32(perm.Perm()))
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), d.Path()+"/"+name)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, ErrNotRegular
	}
	return f, nil
}

// ChmodName sets the permission bits of name (one component) in d; a
// symlink is refused (its mode means nothing and chmod would follow it).
func (d *Dir) ChmodName(name string, mode os.FileMode) error {
	if err := singleName(name); err != nil {
		return err
	}
	fd, err := d.openat(name, unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return ErrNotRegular
	}
	// chmod through the O_PATH descriptor's magic link: the inode checked.
	return unix.Chmod("/proc/self/fd/"+itoa(fd), uint32(mode&os.ModePerm))
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// ReadDirNames lists the names in d (no "." or ".."), unsorted. d's own
// descriptor is O_PATH, which cannot be read: "." is opened for reading
// beside it, so nothing is looked up by path.
func (d *Dir) ReadDirNames() ([]string, error) {
	fd, err := unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: d.Path(), Err: err}
	}
	f := os.NewFile(uintptr(fd), d.Path())
	defer f.Close()
	return f.Readdirnames(-1)
}
