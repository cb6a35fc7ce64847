package hostfs

import (
	"os"

	"golang.org/x/sys/unix"
)

// Rename moves oldName (one component) in d to newName (one component) in
// newDir, replacing what is there without following it: renameat works on
// the names themselves, so a symlink at either name is moved or replaced,
// never resolved. This is how a file written under a temporary name is
// published whole.
func (d *Dir) Rename(oldName string, newDir *Dir, newName string) error {
	if err := singleName(oldName); err != nil {
		return &os.PathError{Op: "renameat", Path: d.Path() + "/" + oldName, Err: err}
	}
	if err := singleName(newName); err != nil {
		return &os.PathError{Op: "renameat", Path: newDir.Path() + "/" + newName, Err: err}
	}
	if err := unix.Renameat(d.fd, oldName, newDir.fd, newName); err != nil {
		return &os.PathError{Op: "renameat", Path: d.Path() + "/" + oldName, Err: err}
	}
	return nil
}

// Sync flushes the directory itself (its entries: a rename or a new file
// in it) to disk, so a published name survives a crash.
func (d *Dir) Sync() error {
	fd, err := d.openat(".", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return &os.PathError{Op: "fsync", Path: d.Path(), Err: err}
	}
	return nil
}
