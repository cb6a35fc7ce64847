package builder

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// ADD unpacks local tar archives (plain, gzip or bzip2 compressed) into its
// destination, as Docker does. Archives come from the user's build context,
// and unpacking happens on the host (in the step's scratch directory) before
// the build sandbox merges the result into the image, so every entry is
// checked: nothing may land outside the destination, no device node is
// created, and the unpacked size is capped.

// MaxUnpackEntries bounds the entries of one archive ADD unpacks, so an
// archive of millions of empty files cannot exhaust inodes.
const MaxUnpackEntries = 1 << 20

// archiveFormat names the compression of a file when it is an archive ADD
// unpacks: "tar", "gzip" or "bzip2"; "" for any other file (copied as is).
// xz and zstd compressed tar archives are recognised but refused.
func archiveFormat(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 6)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return "", errdefs.Invalid("%s is an xz archive, which ADD cannot unpack: use .tar.gz or .tar.bz2 (or COPY it and RUN tar -xJf)", filepath.Base(p))
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return "", errdefs.Invalid("%s is a zstd archive, which ADD cannot unpack: use .tar.gz or .tar.bz2 (or COPY it and RUN tar --zstd -xf)", filepath.Base(p))
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	// Docker unpacks only what is a tar archive once decompressed; a lone
	// .gz of something else, or a broken archive, is copied as is.
	kind, r, derr := decompress(bufio.NewReader(f))
	if derr != nil || kind == "" {
		return "", nil
	}
	if _, terr := tar.NewReader(r).Next(); terr != nil {
		return "", nil
	}
	return kind, nil
}

// decompress recognises gzip and bzip2 by their magic bytes; anything else
// is read as an uncompressed tar ("tar" when it has a ustar header).
func decompress(br *bufio.Reader) (string, io.Reader, error) {
	head, _ := br.Peek(512)
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return "", nil, err
		}
		return "gzip", zr, nil
	case bytes.HasPrefix(head, []byte("BZh")):
		return "bzip2", bzip2.NewReader(br), nil
	case len(head) >= 262 && string(head[257:262]) == "ustar":
		return "tar", br, nil
	}
	return "", br, nil
}

// unpackLimits bound what one archive may unpack to.
type unpackLimits struct {
	maxBytes   int64 // regular file content, in total
	maxEntries int
}

// unpack extracts the tar archive at src (compressed or not) into dir,
// merging with what dir holds. It refuses entries that would leave dir —
// absolute names, "..", paths through a symlink, hard links to outside —
// and stops at the limits; device nodes and FIFOs are skipped and reported
// through note. The error names the entry and what to do.
func unpack(src, dir string, lim unpackLimits, note func(string)) (entries int, err error) {
	f, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	_, r, err := decompress(bufio.NewReader(f))
	if err != nil {
		return 0, fmt.Errorf("read archive %s: %w", filepath.Base(src), err)
	}
	name := filepath.Base(src)
	bad := func(format string, a ...any) error {
		return errdefs.Invalid("ADD %s: %s", name, fmt.Sprintf(format, a...))
	}
	tr := tar.NewReader(r)
	var total int64
	type dirTime struct {
		path string
		t    time.Time
	}
	var dirTimes []dirTime
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return entries, bad("the archive is corrupt: %v", err)
		}
		if entries++; entries > lim.maxEntries {
			return entries, bad("more than %d entries; unpack it with RUN tar in the build instead", lim.maxEntries)
		}
		rel, err := entryPath(hdr.Name)
		if err != nil {
			return entries, bad("%v", err)
		}
		if rel == "" { // "./"
			continue
		}
		target := filepath.Join(dir, filepath.FromSlash(rel))
		if err := noSymlinkParents(dir, rel); err != nil {
			return entries, bad("entry %q %v; the archive must not write through its own symlinks", hdr.Name, err)
		}
		mode := os.FileMode(hdr.Mode & 0o777)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if fi, err := os.Lstat(target); err == nil && !fi.IsDir() {
				if err := os.Remove(target); err != nil {
					return entries, err
				}
			}
			if err := os.MkdirAll(target, 0o755); err != nil {
				return entries, err
			}
			if err := os.Chmod(target, mode|dirSpecial(hdr.Mode)); err != nil {
				return entries, err
			}
			dirTimes = append(dirTimes, dirTime{target, hdr.ModTime})
		case tar.TypeReg:
			if hdr.Size > lim.maxBytes-total {
				return entries, errdefs.Exhausted("ADD %s: unpacks to more than %d MiB (the build's disk limit) at entry %q; make the archive smaller or raise the disk limit",
					name, lim.maxBytes>>20, hdr.Name)
			}
			if err := replace(target); err != nil {
				return entries, bad("entry %q: %v", hdr.Name, err)
			}
			out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
			if err != nil {
				return entries, err
			}
			n, err := io.Copy(out, io.LimitReader(tr, lim.maxBytes-total+1))
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			total += n
			if err != nil {
				return entries, bad("entry %q: %v", hdr.Name, err)
			}
			if total > lim.maxBytes {
				return entries, errdefs.Exhausted("ADD %s: unpacks to more than %d MiB (the build's disk limit); make the archive smaller or raise the disk limit",
					name, lim.maxBytes>>20)
			}
			if err := os.Chmod(target, mode|fileSpecial(hdr.Mode)); err != nil {
				return entries, err
			}
			_ = os.Chtimes(target, hdr.ModTime, hdr.ModTime)
		case tar.TypeSymlink:
			// Any target is allowed: it is resolved inside the sandbox's
			// root filesystem, never on the host (nothing here follows it).
			if err := replace(target); err != nil {
				return entries, bad("entry %q: %v", hdr.Name, err)
			}
			if err := os.Symlink(hdr.Linkname, target); err != nil {
				return entries, err
			}
		case tar.TypeLink:
			lrel, err := entryPath(hdr.Linkname)
			if err != nil || lrel == "" {
				return entries, bad("hard link %q points to %q, outside the archive", hdr.Name, hdr.Linkname)
			}
			if err := noSymlinkParents(dir, lrel); err != nil {
				return entries, bad("hard link %q to %q %v", hdr.Name, hdr.Linkname, err)
			}
			old := filepath.Join(dir, filepath.FromSlash(lrel))
			if fi, err := os.Lstat(old); err != nil || !fi.Mode().IsRegular() {
				return entries, bad("hard link %q points to %q, which is not a file earlier in the archive", hdr.Name, hdr.Linkname)
			}
			if err := replace(target); err != nil {
				return entries, bad("entry %q: %v", hdr.Name, err)
			}
			if err := os.Link(old, target); err != nil {
				return entries, err
			}
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			note(fmt.Sprintf("ADD %s: skipped %q: device nodes and FIFOs are not unpacked (create them with RUN mknod if needed)", name, hdr.Name))
			entries--
			continue
		case tar.TypeXGlobalHeader:
			entries--
			continue
		default:
			note(fmt.Sprintf("ADD %s: skipped %q: unsupported entry type %q", name, hdr.Name, hdr.Typeflag))
			entries--
			continue
		}
	}
	// Directory times last: creating their entries changed them.
	for i := len(dirTimes) - 1; i >= 0; i-- {
		_ = os.Chtimes(dirTimes[i].path, dirTimes[i].t, dirTimes[i].t)
	}
	return entries, nil
}

// entryPath cleans an archive entry name into a path relative to the
// destination, refusing absolute names and names that climb out of it.
func entryPath(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("entry %q has an absolute path; archives for ADD must hold relative paths", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("entry %q climbs out of the destination with \"..\"", name)
		}
	}
	rel := path.Clean(name)
	if rel == "." {
		return "", nil
	}
	return rel, nil
}

// noSymlinkParents checks that no directory on the way from dir to rel is
// a symlink (which could point anywhere on the host).
func noSymlinkParents(dir, rel string) error {
	parts := strings.Split(rel, "/")
	p := dir
	for _, part := range parts[:len(parts)-1] {
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			return nil // created as a plain directory
		}
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return fmt.Errorf("goes through the symlink %q", strings.TrimPrefix(p, dir+"/"))
		}
		if !fi.IsDir() {
			return fmt.Errorf("goes through %q, which is not a directory", strings.TrimPrefix(p, dir+"/"))
		}
	}
	return nil
}

// replace removes what target is, unless it is a directory (an archive
// entry replaces an earlier one of the same name, as tar does).
func replace(target string) error {
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	fi, err := os.Lstat(target)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory and cannot be replaced by a file", filepath.Base(target))
	}
	return os.Remove(target)
}

func fileSpecial(m int64) os.FileMode {
	var out os.FileMode
	if m&0o4000 != 0 {
		out |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= os.ModeSetgid
	}
	return out
}

func dirSpecial(m int64) os.FileMode {
	out := fileSpecial(m)
	if m&0o1000 != 0 {
		out |= os.ModeSticky
	}
	return out
}

// unpackMatch unpacks one ADD source into stageDir when it is a tar archive
// and reports whether it was one.
func unpackMatch(src, stageDir string, lim unpackLimits, note func(string)) (bool, error) {
	kind, err := archiveFormat(src)
	if err != nil || kind == "" {
		return false, err
	}
	n, err := unpack(src, stageDir, lim, note)
	if err != nil {
		return false, err
	}
	note(fmt.Sprintf("unpacked %s (%s archive, %d entries)", filepath.Base(src), kind, n))
	return true, nil
}
