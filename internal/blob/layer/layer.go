// Package layer moves overlay layers (a template build's steps, a paused
// sandbox's filesystem) through the blob store: Publish packs a layer
// directory the server made into a deterministic tar stream and Puts it;
// Pull fetches one through the node's blob.Cache and unpacks it with
// internal/archive's descriptor-relative extraction, which follows no
// path, symlink or hard link an entry names.
//
// The tar keeps what an overlay lower layer needs: owners (the image's
// ids, already shifted back), modes with setuid/setgid/sticky, times, hard
// links, symlinks, whiteouts (character devices 0/0) and the extended
// attributes in archive.LayerXattrs (opaque directories, file
// capabilities). Entries are sorted by name, so one tree gives one digest.
package layer

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/archive"
	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/hostfs"
	"github.com/sbxdev/sbx/internal/keylock"
)

// Limits of one unpacked layer: generous (a layer is what a build step or
// a sandbox wrote), but a corrupt or hostile blob still ends.
const (
	MaxBytes   = 256 << 30
	MaxEntries = 8 << 20
)

// Pack writes the layer directory dir as a tar stream to w. dir is a copy
// the host made (a captured layer), never a tree a sandbox can change.
func Pack(ctx context.Context, dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	p := packer{tw: tw, root: dir, links: map[[2]uint64]string{}}
	if err := p.walk(ctx, "."); err != nil {
		return err
	}
	return tw.Close()
}

type packer struct {
	tw    *tar.Writer
	root  string
	links map[[2]uint64]string // (dev, inode) -> first name, for hard links
}

func (p *packer) walk(ctx context.Context, rel string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	full := filepath.Join(p.root, rel)
	var st unix.Stat_t
	if err := unix.Lstat(full, &st); err != nil {
		return fmt.Errorf("pack layer %s: %w", p.root, err)
	}
	hdr := &tar.Header{Name: filepath.ToSlash(rel), Uid: int(st.Uid), Gid: int(st.Gid),
		Mode: int64(st.Mode & 0o7777), ModTime: time.Unix(st.Mtim.Unix()).UTC(), Format: tar.FormatPAX}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		if rel == "." {
			hdr.Name = "./"
		} else {
			hdr.Name += "/"
		}
	case unix.S_IFREG:
		key := [2]uint64{uint64(st.Dev), st.Ino}
		if first, ok := p.links[key]; ok && st.Nlink > 1 {
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
			break
		}
		if st.Nlink > 1 {
			p.links[key] = hdr.Name
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
	case unix.S_IFLNK:
		target, err := os.Readlink(full)
		if err != nil {
			return fmt.Errorf("pack layer %s: %w", p.root, err)
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
	case unix.S_IFCHR:
		hdr.Typeflag = tar.TypeChar
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	default: // FIFOs, sockets, block devices: not layer content
		return nil
	}
	if hdr.Typeflag != tar.TypeSymlink && hdr.Typeflag != tar.TypeLink {
		for _, name := range archive.LayerXattrs {
			if v, ok := lgetxattr(full, name); ok {
				if hdr.PAXRecords == nil {
					hdr.PAXRecords = map[string]string{}
				}
				hdr.PAXRecords["SCHILY.xattr."+name] = string(v)
			}
		}
	}
	if err := p.tw.WriteHeader(hdr); err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeReg:
		f, err := os.OpenFile(full, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return fmt.Errorf("pack layer %s: %w", p.root, err)
		}
		_, err = io.CopyN(p.tw, f, hdr.Size)
		f.Close()
		if err != nil {
			return fmt.Errorf("pack layer %s: %s: %w", p.root, rel, err)
		}
	case tar.TypeDir:
		entries, err := os.ReadDir(full)
		if err != nil {
			return fmt.Errorf("pack layer %s: %w", p.root, err)
		}
		names := make([]string, len(entries))
		for i, e := range entries {
			names[i] = e.Name()
		}
		slices.Sort(names)
		for _, n := range names {
			if err := p.walk(ctx, filepath.Join(rel, n)); err != nil {
				return err
			}
		}
	}
	return nil
}

func lgetxattr(path, name string) ([]byte, bool) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) && len(buf) < 64<<10 {
			buf = make([]byte, 4*len(buf))
			continue
		}
		if err != nil {
			return nil, false
		}
		return buf[:n], true
	}
}

// Publish packs dir and stores it, returning its digest and size.
func Publish(ctx context.Context, st blob.Store, dir string) (blob.Digest, int64, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(Pack(ctx, dir, pw)) }()
	d, n, err := st.Put(ctx, pr)
	pr.CloseWithError(errors.New("publish ended"))
	if err != nil {
		return "", 0, fmt.Errorf("publish layer %s to the blob store: %w", dir, err)
	}
	return d, n, nil
}

// Pull makes dst (which must not exist; its parent must) the unpacked
// layer d, fetched through cache. what names the layer's owner in errors
// ("template foo build b1", "sandbox x"). A blob the store does not hold
// fails with an errdefs.ErrFailedPrecondition naming it, and nothing is
// left at dst.
func Pull(ctx context.Context, cache *blob.Cache, d blob.Digest, dst, what string) error {
	h, err := cache.Get(ctx, d)
	if err != nil {
		if errors.Is(err, blob.ErrNotFound) {
			return errdefs.Precondition("%s: layer %s is missing from the blob store (deleted, or published to another store): "+
				"check that every server uses the same --blob-store; rebuild the template if the blob is gone", what, d)
		}
		return fmt.Errorf("%s: fetch layer %s from the blob store: %w", what, d, err)
	}
	defer h.Release()
	f, err := h.Open()
	if err != nil {
		return fmt.Errorf("%s: open cached layer %s: %w", what, d, err)
	}
	defer f.Close()
	tmp := dst + ".pull-" + randHex()
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return fmt.Errorf("%s: unpack layer %s: %w", what, d, err)
	}
	defer os.RemoveAll(tmp)
	dir, err := hostfs.OpenDir(tmp)
	if err != nil {
		return err
	}
	_, err = archive.Extract(f, dir, archive.Options{Name: "layer " + string(d), MaxBytes: MaxBytes, MaxEntries: MaxEntries,
		Owners: true, Layer: true})
	dir.Close()
	if err != nil {
		return fmt.Errorf("%s: unpack layer %s: %w", what, d, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("%s: unpack layer %s: %w", what, d, err)
	}
	return nil
}

func randHex() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Puller unpacks layers once however many callers ask for one at a time:
// the first unpacks, the others wait and find it in place. The zero value
// (with Cache set) is ready to use.
type Puller struct {
	Cache *blob.Cache
	locks keylock.Locks // by destination, only while in use
}

// Ensure makes dst the unpacked layer d unless it is there already (Pull
// renames a finished layer into place, so a dst that exists is whole).
// Either way it marks dst's parent directory used now (its mtime), which
// the node's pruning of pulled layers reads: a layer just handed out is
// not removed under its user.
func (p *Puller) Ensure(ctx context.Context, d blob.Digest, dst, what string) error {
	defer MarkUsed(dst)
	if _, err := os.Lstat(dst); err == nil {
		return nil
	}
	unlock := p.locks.Lock(dst)
	defer unlock()
	if _, err := os.Lstat(dst); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o711); err != nil {
		return err
	}
	return Pull(ctx, p.Cache, d, dst, what)
}

// MarkUsed sets the mtime of dst's parent directory (a pulled layer's
// own directory, <hex>/ above <hex>/diff) to now.
func MarkUsed(dst string) {
	now := time.Now()
	_ = os.Chtimes(filepath.Dir(dst), now, now)
}

// memoPath is where the digest of a published layer directory is kept
// beside it (layers are immutable once made), so a layer published again
// (a base's, by each build FROM it; a sandbox's older boots, at each
// pause) is not packed again.
func memoPath(dir string) string {
	return filepath.Join(filepath.Dir(dir), "blob-"+filepath.Base(dir))
}

// WriteMemo records that dir is the layer d of n bytes (a layer just
// pulled), so PublishMemo needs no packing.
func WriteMemo(dir string, d blob.Digest, n int64) {
	_ = os.WriteFile(memoPath(dir), []byte(fmt.Sprintf("%s %d\n", d, n)), 0o600)
}

// PublishMemo is Publish, skipped when dir was published (or pulled)
// before and the store still holds its blob (which it then touches).
func PublishMemo(ctx context.Context, st blob.Store, dir string) (blob.Digest, int64, error) {
	if raw, err := os.ReadFile(memoPath(dir)); err == nil {
		ds, ns, _ := strings.Cut(strings.TrimSpace(string(raw)), " ")
		if d, err := blob.ParseDigest(ds); err == nil {
			if n, err := strconv.ParseInt(ns, 10, 64); err == nil {
				// Touched, not just checked: the caller records a reference
				// to it next, which a garbage collection must not miss.
				if err := st.Touch(ctx, d); err == nil {
					return d, n, nil
				}
			}
		}
	}
	d, n, err := Publish(ctx, st, dir)
	if err != nil {
		return "", 0, err
	}
	WriteMemo(dir, d, n)
	return d, n, nil
}
