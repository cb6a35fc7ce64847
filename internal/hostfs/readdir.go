package hostfs

// Reading a directory a batch at a time. A directory the sandbox can write
// may hold millions of names (a loop of touch on its tmpfs costs it
// nothing); whatever the host reads of it must be bounded while reading,
// not after, so nothing here holds more than the caller asked for.

import (
	"errors"
	"io"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// DirReader reads a directory's entries in batches, getdents a buffer at a
// time (os.File keeps one block of it), so memory and lstat calls follow
// what the caller consumes, not the directory's size.
type DirReader struct {
	d *Dir
	f *os.File
}

// Reader opens d for reading its entries. d's own descriptor is O_PATH,
// which cannot be read: "." is opened for reading beside it, so nothing is
// looked up by path. The caller closes the reader.
func (d *Dir) Reader() (*DirReader, error) {
	fd, err := unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: d.Path(), Err: err}
	}
	return &DirReader{d: d, f: os.NewFile(uintptr(fd), d.Path())}, nil
}

// Names returns up to n (> 0) more names (no "." or ".."), in the
// directory's order, and io.EOF once there are none.
func (r *DirReader) Names(n int) ([]string, error) {
	if n <= 0 {
		return nil, errors.New("hostfs: DirReader.Names wants n > 0")
	}
	return r.f.Readdirnames(n)
}

// Next returns up to n (> 0) more entries, each with its own status
// (symlinks not followed), in the directory's order, and io.EOF once there
// are none. A name removed between the read and its lstat is left out, so
// a batch may be shorter than n before the end.
func (r *DirReader) Next(n int) ([]DirEntry, error) {
	names, err := r.Names(n)
	if err != nil {
		return nil, err
	}
	out := make([]DirEntry, 0, len(names))
	for _, name := range names {
		st, err := r.d.Lstat(name)
		if errors.Is(err, unix.ENOENT) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, DirEntry{Name: name, Mode: st.Mode, Size: st.Size, Mtim: timeOf(st.Mtim)})
	}
	return out, nil
}

// Close releases the reader's descriptor (not the Dir's).
func (r *DirReader) Close() error { return r.f.Close() }

// ReadDirN lists at most n (> 0) entries of d, sorted by name, with each
// entry's own status. more reports that d holds further names, none of
// which were read: a caller with a budget refuses or cuts the listing
// without the cost of the rest. Which n entries come back when more is
// true is the directory's order, not the first n by name.
func (d *Dir) ReadDirN(n int) (ents []DirEntry, more bool, err error) {
	r, err := d.Reader()
	if err != nil {
		return nil, false, err
	}
	defer r.Close()
	for len(ents) < n {
		batch, err := r.Next(min(n-len(ents), dirBatch))
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, false, err
		}
		ents = append(ents, batch...)
	}
	if len(ents) >= n {
		_, err := r.Names(1)
		more = err == nil
	}
	slices.SortFunc(ents, func(a, b DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return ents, more, nil
}

// dirBatch is how many names are read (and lstat'ed) at once: about what
// one getdents block holds.
const dirBatch = 256
