// Package atomicfile replaces the server's own files whole: a reader, a
// restart after a kill, or (for durable writes) a boot after a host crash
// finds the old file or the new one, never a torn one. A file goes to a
// temporary name of its own in the same directory (so two writers of one
// path never write or rename each other's), is synced, then renamed over
// the path, and the directory is synced so the rename is on disk too.
//
// The directory is the host's own: the path is resolved by name. For
// directories sandbox or tenant code can write, use internal/hostfs.
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write puts data at path with perm (whatever the umask), durably.
func Write(path string, data []byte, perm os.FileMode) error {
	return WriteFunc(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFunc puts what write writes at path with perm, durably. When write
// fails nothing changes at path and no temporary file stays.
func WriteFunc(path string, perm os.FileMode, write func(io.Writer) error) error {
	return replace(path, perm, write, true)
}

// WriteVolatile is Write without the syncs: the file is still replaced
// whole for readers and after a kill of the server, but a host crash may
// leave the old file, or an empty one, in its place. Only for files that
// are worthless after a host crash, where the fsyncs' cost counts.
func WriteVolatile(path string, data []byte, perm os.FileMode) error {
	return replace(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	}, false)
}

func replace(path string, perm os.FileMode, write func(io.Writer) error, durable bool) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	tmp := f.Name()
	err = write(f)
	if err == nil {
		err = f.Chmod(perm) // CreateTemp made it 0600, and the umask applies to neither
	}
	if err == nil && durable {
		err = f.Sync()
	}
	if err = errors.Join(err, f.Close()); err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("replace %s: %w", path, err)
	}
	if durable {
		return syncDir(dir)
	}
	return nil
}

// syncDir makes the entries of dir (a rename into it) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if err = errors.Join(err, d.Close()); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
