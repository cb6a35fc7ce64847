package blob

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/hostfs"
)

// FileStore keeps blobs in a directory:
//
//	DIR/sha256/ab/abcdef...   one file per blob, named by its digest
//	DIR/tmp/                  uploads in progress
//
// Every access is relative to the directory's descriptor through hostfs
// (no symlink followed, nothing but regular files opened), so an entry
// planted in the directory cannot send the host elsewhere. A blob is
// written under a random name in tmp/, synced, and renamed into place
// only once its digest is known: a reader never sees a partial blob.
type FileStore struct {
	root *hostfs.Dir
	tmp  *hostfs.Dir
}

var _ Store = (*FileStore)(nil)

// NewFileStore opens (creating it, mode 0700) the store in dir, a path the
// host controls.
func NewFileStore(dir string) (*FileStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("blob store %s: %w", dir, err)
	}
	root, err := hostfs.OpenDir(dir)
	if err != nil {
		return nil, fmt.Errorf("blob store %s: %w", dir, err)
	}
	tmp, err := root.MkdirAll("tmp", 0o700)
	if err != nil {
		root.Close()
		return nil, fmt.Errorf("blob store %s: %w", dir, err)
	}
	return &FileStore{root: root, tmp: tmp}, nil
}

// Close releases the directory descriptors.
func (s *FileStore) Close() error {
	return errors.Join(s.tmp.Close(), s.root.Close())
}

func shard(d Digest) string { return algorithm + "/" + d.Hex()[:2] }
func name(d Digest) string  { return shard(d) + "/" + d.Hex() }

func randomName() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "put-" + hex.EncodeToString(b[:])
}

// Put writes r to a temporary file, then publishes it under its digest.
func (s *FileStore) Put(ctx context.Context, r io.Reader) (Digest, int64, error) {
	tmpName := randomName()
	f, err := s.tmp.Create(tmpName, 0o600)
	if err != nil {
		return "", 0, fmt.Errorf("put blob: %w", err)
	}
	published := false
	defer func() {
		if !published {
			_ = s.tmp.Remove(tmpName)
		}
	}()
	d, n, err := hashCopy(ctx, f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, fmt.Errorf("put blob: %w", err)
	}
	dir, err := s.root.MkdirAll(shard(d), 0o700)
	if err != nil {
		return "", 0, fmt.Errorf("put blob %s: %w", d, err)
	}
	defer dir.Close()
	// Renaming over an existing copy is fine: it holds the same bytes.
	if err := s.tmp.Rename(tmpName, dir, d.Hex()); err != nil {
		return "", 0, fmt.Errorf("put blob %s: %w", d, err)
	}
	published = true
	if err := dir.Sync(); err != nil {
		return "", 0, fmt.Errorf("put blob %s: %w", d, err)
	}
	return d, n, nil
}

// notFound turns "no such file" into ErrNotFound and keeps other errors.
func notFound(d Digest, err error) error {
	if errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: %w", d, ErrNotFound)
	}
	return fmt.Errorf("blob %s: %w", d, err)
}

// Open opens the blob's file; a symlink or anything but a regular file in
// its place is refused.
func (s *FileStore) Open(ctx context.Context, d Digest) (io.ReadCloser, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := s.root.Open(name(d))
	if err != nil {
		return nil, notFound(d, err)
	}
	return f, nil
}

// Stat returns the blob's size.
func (s *FileStore) Stat(ctx context.Context, d Digest) (Info, error) {
	if err := d.Validate(); err != nil {
		return Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	st, err := s.root.Stat(name(d))
	if err != nil {
		return Info{}, notFound(d, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return Info{}, fmt.Errorf("blob %s: %w", d, hostfs.ErrNotRegular)
	}
	return Info{Digest: d, Size: st.Size, ModTime: time.Unix(st.Mtim.Unix()).UTC()}, nil
}

// Exists reports whether the blob's file is there.
func (s *FileStore) Exists(ctx context.Context, d Digest) (bool, error) {
	_, err := s.Stat(ctx, d)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Delete removes the blob's file (whatever is at its name, unfollowed).
func (s *FileStore) Delete(ctx context.Context, d Digest) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dir, err := s.root.Sub(shard(d))
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("delete blob %s: %w", d, err)
	}
	defer dir.Close()
	if err := dir.Remove(d.Hex()); err != nil {
		return fmt.Errorf("delete blob %s: %w", d, err)
	}
	return nil
}

// DeleteIfOlder deletes the blob unless it was stored or touched after
// cutoff, and reports whether it did; a missing blob is (false, nil). The
// blob is first renamed out of its name, so a Touch from then on fails
// (its writer stores the blob again) and one that landed before shows in
// the mtime looked at after the rename: no touch is lost between the
// look and the delete, as it could be with Stat then Delete. A young blob
// goes back (over a copy Put meanwhile: the same bytes).
func (s *FileStore) DeleteIfOlder(ctx context.Context, d Digest, cutoff time.Time) (bool, error) {
	if err := d.Validate(); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	dir, err := s.root.Sub(shard(d))
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("delete blob %s: %w", d, err)
	}
	defer dir.Close()
	aside := gcPrefix + d.Hex()[:16] + "-" + strings.TrimPrefix(randomName(), "put-")
	if err := dir.Rename(d.Hex(), s.tmp, aside); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("delete blob %s: %w", d, err)
	}
	st, err := s.tmp.Lstat(aside)
	if err == nil && !time.Unix(st.Mtim.Unix()).After(cutoff) {
		if err := s.tmp.Remove(aside); err != nil {
			return false, fmt.Errorf("delete blob %s: %w", d, err)
		}
		return true, nil
	}
	if err := s.tmp.Rename(aside, dir, d.Hex()); err != nil {
		return false, fmt.Errorf("put back blob %s touched during its delete: %w", d, err)
	}
	return false, nil
}

// gcPrefix names a blob DeleteIfOlder set aside in tmp/ (PruneTmp removes
// one a crash left there).
const gcPrefix = "gc-"

// List walks DIR/sha256/*/: names that are not a digest in its right
// shard, and anything but regular files, are skipped.
func (s *FileStore) List(ctx context.Context, fn func(Info) error) error {
	top, err := s.root.Sub(algorithm)
	if errors.Is(err, unix.ENOENT) {
		return nil // nothing stored yet
	}
	if err != nil {
		return fmt.Errorf("list blobs: %w", err)
	}
	defer top.Close()
	shards, err := top.ReadDirNames()
	if err != nil {
		return fmt.Errorf("list blobs: %w", err)
	}
	for _, sh := range shards {
		if len(sh) != 2 {
			continue
		}
		dir, err := top.Sub(sh)
		if err != nil {
			continue // not a directory (or gone): not a shard
		}
		names, err := dir.ReadDirNames()
		dir.Close()
		if err != nil {
			return fmt.Errorf("list blobs: %w", err)
		}
		for _, n := range names {
			d := Digest(prefix + n)
			if d.Validate() != nil || !strings.HasPrefix(n, sh) {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			info, err := s.Stat(ctx, d)
			if errors.Is(err, ErrNotFound) || errors.Is(err, hostfs.ErrNotRegular) {
				continue // deleted meanwhile, or not a blob
			}
			if err != nil {
				return fmt.Errorf("list blobs: %w", err)
			}
			if err := fn(info); err != nil {
				return err
			}
		}
	}
	return nil
}

// Touch sets the blob file's times to now.
func (s *FileStore) Touch(ctx context.Context, d Digest) error {
	if _, err := s.Stat(ctx, d); err != nil {
		return err // invalid, missing or not a regular file
	}
	dir, err := s.root.Sub(shard(d))
	if err != nil {
		return notFound(d, err)
	}
	defer dir.Close()
	now := time.Now()
	if err := dir.Chtimes(d.Hex(), now, now); err != nil {
		return notFound(d, err)
	}
	return nil
}

// PruneTmp removes files a Put left in tmp/ (the process died mid-write)
// whose last write is before before, and returns how many. A Put in
// progress keeps writing its file, so only dead ones are that old.
func (s *FileStore) PruneTmp(ctx context.Context, before time.Time) (int, error) {
	names, err := s.tmp.ReadDirNames()
	if err != nil {
		return 0, fmt.Errorf("prune blob store tmp: %w", err)
	}
	removed := 0
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		if !strings.HasPrefix(n, "put-") && !strings.HasPrefix(n, gcPrefix) {
			continue
		}
		st, err := s.tmp.Lstat(n)
		if err != nil || !time.Unix(st.Mtim.Unix()).Before(before) {
			continue
		}
		if err := s.tmp.Remove(n); err == nil {
			removed++
		}
	}
	return removed, nil
}
