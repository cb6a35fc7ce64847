// Package archive unpacks tar archives that a tenant made (build-context
// uploads, ADD sources) on the host, into a directory the host owns.
//
// Nothing an archive holds may reach outside the destination: absolute
// names and ".." are refused, no entry is written through a symlink (one
// from the same archive or one already on disk), a hard link may only name
// a regular file extracted earlier from the same archive, and the unpacked
// size and entry count are capped. Every filesystem operation is relative
// to a directory descriptor (internal/hostfs: openat2 with
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, mkdirat, symlinkat, linkat), never a
// path joined and then opened.
package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/hostfs"
)

// Options bound and shape one extraction.
type Options struct {
	// Name names the archive in messages ("ADD app.tar.gz", "upload").
	Name string
	// MaxBytes caps the content of regular files, in total.
	MaxBytes int64
	// MaxEntries caps the number of entries.
	MaxEntries int
	// Reserve, when set, is asked for a regular file's size before any of
	// its content is written: a budget several extractions share (a
	// team's uploads). Its error stops the extraction and is returned.
	Reserve func(n int64) error
	// SkipSpecial skips device nodes, FIFOs and entry types this package
	// does not know, reporting each through Note; otherwise they are
	// refused.
	SkipSpecial bool
	// Note receives what was skipped; may be nil.
	Note func(string)
	// Digest computes Result.Digest (a content hash of the unpacked tree).
	Digest bool
	// Owners gives entries the numeric owners the archive names (image
	// layers); otherwise they belong to the extracting process.
	Owners bool
	// Layer unpacks an overlay layer the server published itself
	// (internal/blob/layer): character devices 0/0 become whiteouts, and
	// the extended attributes in LayerXattrs are restored from the
	// entries' PAX records. Other device nodes are still refused.
	Layer bool
}

// LayerXattrs are the extended attributes a layer keeps: the overlay's
// opaque-directory mark and file capabilities (ping, and what an image
// grants). No other attribute of a tenant's files reaches the host.
var LayerXattrs = []string{"trusted.overlay.opaque", "security.capability"}

// xattrPAX prefixes an extended attribute in a PAX record (GNU tar's and
// Go's spelling).
const xattrPAX = "SCHILY.xattr."

// layerXattrs returns the allowed extended attributes of an entry.
func layerXattrs(hdr *tar.Header) map[string][]byte {
	var out map[string][]byte
	for _, name := range LayerXattrs {
		if v, ok := hdr.PAXRecords[xattrPAX+name]; ok {
			if out == nil {
				out = map[string][]byte{}
			}
			out[name] = []byte(v)
		}
	}
	return out
}

// Result describes a finished extraction.
type Result struct {
	Entries int   // entries unpacked (skipped ones not counted)
	Bytes   int64 // regular file content
	// Digest identifies the unpacked tree: every path with its type,
	// permission bits, size and content (or link target), in path order;
	// owners and times are left out, so two archives of the same files
	// made at different times or by different tools have the same digest.
	Digest string
	// HasDirs reports whether the archive held directory entries.
	HasDirs bool
}

// LimitError is an archive over one of the limits; errors.Is(err,
// errdefs.ErrResourceExhausted) holds for it.
type LimitError struct {
	Name  string // Options.Name
	What  string // "bytes" or "entries"
	Max   int64
	Entry string // the entry that went over
}

func (e *LimitError) Error() string {
	if e.What == "entries" {
		return fmt.Sprintf("%s: more than %d entries", e.Name, e.Max)
	}
	return fmt.Sprintf("%s: unpacks to more than %s at entry %q", e.Name, FormatSize(e.Max), e.Entry)
}

// FormatSize writes a limit the way a person reads it: whole MiB as MiB,
// anything under 1 MiB in bytes (a cap of 3,000 bytes is not "0 MiB").
func FormatSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}

// Is makes the error a resource-exhausted one.
func (e *LimitError) Is(target error) bool { return target == errdefs.ErrResourceExhausted }

// Decompress recognises gzip and bzip2 by their magic bytes and returns a
// reader of the tar stream and its compression ("gzip", "bzip2", or "tar"
// for an uncompressed archive with a ustar header, "" when unknown: read as
// tar anyway). xz and zstd are recognised and refused.
func Decompress(br *bufio.Reader) (kind string, r io.Reader, err error) {
	head, _ := br.Peek(512)
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return "", nil, errdefs.Invalid("not a valid gzip stream: %v", err)
		}
		return "gzip", zr, nil
	case bytes.HasPrefix(head, []byte("BZh")):
		return "bzip2", bzip2.NewReader(br), nil
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return "xz", nil, errdefs.Invalid("xz archives cannot be unpacked here: use .tar.gz or .tar.bz2")
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return "zstd", nil, errdefs.Invalid("zstd archives cannot be unpacked here: use .tar.gz or .tar.bz2")
	case len(head) >= 262 && string(head[257:262]) == "ustar":
		return "tar", br, nil
	}
	return "", br, nil
}

// Extract unpacks the tar stream r (already decompressed) into dst,
// merging with what dst holds. An entry that would leave dst, or write
// through a symlink, fails the whole extraction with an invalid-argument
// error naming the entry; what was unpacked so far stays (callers extract
// into a fresh directory and drop it on failure).
func Extract(r io.Reader, dst *hostfs.Dir, opt Options) (Result, error) {
	x := &extractor{dst: dst, opt: opt, files: map[string]bool{}, sums: map[string]string{}}
	defer x.closeParent()
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return x.res, x.bad("the archive is corrupt: %v", err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return x.res, err
		}
	}
	if err := x.dirTimes(); err != nil {
		return x.res, err
	}
	if opt.Digest {
		x.res.Digest = x.digest()
	}
	return x.res, nil
}

type dirTime struct {
	rel string
	t   time.Time
}

type extractor struct {
	dst   *hostfs.Dir
	opt   Options
	res   Result
	files map[string]bool // regular files unpacked so far (hard link targets)
	times []dirTime
	sums  map[string]string // rel -> digest record (Options.Digest)
	seen  int               // entries read, skipped ones included

	parentRel string // the last parent directory opened, kept for the next entry
	parent    *hostfs.Dir
}

func (x *extractor) bad(format string, a ...any) error {
	return errdefs.Invalid("%s: %s", x.opt.Name, fmt.Sprintf(format, a...))
}

func (x *extractor) note(format string, a ...any) {
	if x.opt.Note != nil {
		x.opt.Note(x.opt.Name + ": " + fmt.Sprintf(format, a...))
	}
}

// Name cleans an archive entry name into a slash-separated path relative
// to the destination ("" for the destination itself), refusing absolute
// names and names that climb out with "..".
func Name(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("has an absolute path; archives must hold relative paths")
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("climbs out of the destination with \"..\"")
		}
	}
	if strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("contains a NUL byte")
	}
	rel := path.Clean(name)
	if rel == "." {
		return "", nil
	}
	return rel, nil
}

func (x *extractor) entry(hdr *tar.Header, tr io.Reader) error {
	rel, err := Name(hdr.Name)
	if err != nil {
		return x.bad("entry %q %v", hdr.Name, err)
	}
	if rel == "" && x.opt.Layer && hdr.Typeflag == tar.TypeDir {
		// A layer's root is the root directory of the sandboxes above it:
		// its owner and mode are content.
		return x.root(hdr)
	}
	if hdr.Typeflag == tar.TypeXGlobalHeader || rel == "" {
		return nil
	}
	if x.seen++; x.seen > x.opt.MaxEntries {
		return &LimitError{Name: x.opt.Name, What: "entries", Max: int64(x.opt.MaxEntries), Entry: hdr.Name}
	}
	whiteout := x.opt.Layer && hdr.Typeflag == tar.TypeChar && hdr.Devmajor == 0 && hdr.Devminor == 0
	switch {
	case whiteout:
	case hdr.Typeflag == tar.TypeChar, hdr.Typeflag == tar.TypeBlock, hdr.Typeflag == tar.TypeFifo:
		return x.special(hdr, "device nodes and FIFOs are not unpacked (create them with RUN mknod if needed)")
	case hdr.Typeflag == tar.TypeDir, hdr.Typeflag == tar.TypeReg, hdr.Typeflag == tar.TypeSymlink,
		hdr.Typeflag == tar.TypeLink, hdr.Typeflag == tar.TypeGNUSparse:
	default:
		return x.special(hdr, fmt.Sprintf("unsupported entry type %q; only files, directories and links are unpacked", hdr.Typeflag))
	}
	parentRel, base := path.Split(rel)
	parent, err := x.parentDir(strings.TrimSuffix(parentRel, "/"))
	if err != nil {
		return x.pathError(hdr.Name, err)
	}
	mode := fs.FileMode(hdr.Mode & 0o777)
	switch hdr.Typeflag {
	case tar.TypeChar: // a whiteout (checked above)
		if err = x.replace(parent, rel, base); err == nil {
			err = parent.MknodWhiteout(base)
		}
		if err == nil && x.opt.Owners {
			err = parent.Lchown(base, hdr.Uid, hdr.Gid)
		}
		x.record(rel, "w", 0, 0, "")
	case tar.TypeDir:
		err = x.dir(parent, rel, base, mode|special(hdr.Mode, true), hdr)
	case tar.TypeReg, tar.TypeGNUSparse:
		err = x.file(parent, rel, base, hdr, tr, mode|special(hdr.Mode, false))
	case tar.TypeSymlink:
		// Any target is allowed: it is stored, never resolved by the host
		// (the sandbox resolves it inside its own root filesystem).
		if err = x.replace(parent, rel, base); err == nil {
			err = parent.Symlink(hdr.Linkname, base)
		}
		if err == nil && x.opt.Owners {
			err = parent.Lchown(base, hdr.Uid, hdr.Gid)
		}
		x.record(rel, "l", 0o777, int64(len(hdr.Linkname)), hdr.Linkname)
	case tar.TypeLink:
		err = x.hardLink(parent, rel, base, hdr)
	}
	if err != nil {
		return x.pathError(hdr.Name, err)
	}
	x.res.Entries++
	return nil
}

// root gives the destination itself a layer's root directory's owner, mode
// and extended attributes.
func (x *extractor) root(hdr *tar.Header) error {
	if x.opt.Owners {
		if err := x.dst.ChownSelf(hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	if err := x.dst.Chmod(fs.FileMode(hdr.Mode&0o777) | special(hdr.Mode, true)); err != nil {
		return err
	}
	for k, v := range layerXattrs(hdr) {
		if err := x.dst.Setxattr(k, v); err != nil {
			return err
		}
	}
	return nil
}

func (x *extractor) special(hdr *tar.Header, why string) error {
	if !x.opt.SkipSpecial {
		return x.bad("entry %q: %s", hdr.Name, why)
	}
	x.seen--
	x.note("skipped %q: %s", hdr.Name, why)
	return nil
}

// pathError turns a refused filesystem operation into a message naming the
// entry; other errors stay internal.
func (x *extractor) pathError(entry string, err error) error {
	var le *LimitError
	var de *errdefs.Error
	var ce *corruptError
	switch {
	case errors.As(err, &le), errors.As(err, &de):
		return err
	case errors.As(err, &ce):
		return x.bad("entry %q: the archive is corrupt: %v", entry, ce.err)
	case errors.Is(err, hostfs.ErrSymlink):
		return x.bad("entry %q goes through the symlink %q; an archive must not write through symlinks", entry, offender(err))
	case errors.Is(err, hostfs.ErrNotDir):
		return x.bad("entry %q goes through %q, which is not a directory", entry, offender(err))
	case errors.Is(err, unix.ENAMETOOLONG):
		return x.bad("entry %q: name too long", entry)
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
		return errdefs.Wrap(errdefs.ErrResourceExhausted, err, "%s: no space left on the server to unpack entry %q", x.opt.Name, entry)
	}
	return fmt.Errorf("%s: entry %q: %w", x.opt.Name, entry, err)
}

// offender is the path a refused lookup stopped at (hostfs.MkdirAll names
// it relative to the destination).
func offender(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Path
	}
	return ""
}

// parentDir opens (creating what is missing) the directory an entry goes
// into. Archives list entries of one directory together, so the last
// parent is kept open.
func (x *extractor) parentDir(rel string) (*hostfs.Dir, error) {
	if x.parent != nil && x.parentRel == rel {
		return x.parent, nil
	}
	x.closeParent()
	d, err := x.dst.MkdirAll(rel, 0o755)
	if err != nil {
		return nil, err
	}
	x.parent, x.parentRel = d, rel
	return d, nil
}

func (x *extractor) closeParent() {
	if x.parent != nil {
		x.parent.Close()
		x.parent = nil
	}
}

// replace removes what the destination holds at base, unless it is a
// directory (an entry replaces an earlier one of the same name, as tar
// does, but a directory is not replaced by a file).
func (x *extractor) replace(parent *hostfs.Dir, rel, base string) error {
	delete(x.files, rel)
	st, err := parent.Lstat(base)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return errdefs.Invalid("%s: entry %q is a directory in the destination and cannot be replaced by a file", x.opt.Name, rel)
	}
	return parent.Remove(base)
}

func (x *extractor) dir(parent *hostfs.Dir, rel, base string, mode fs.FileMode, hdr *tar.Header) error {
	if st, err := parent.Lstat(base); err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := parent.Remove(base); err != nil {
			return err
		}
	}
	delete(x.files, rel)
	if err := parent.Mkdir(base, 0o700); err != nil {
		return err
	}
	if x.opt.Owners { // before the mode: chown clears setgid
		if err := parent.Lchown(base, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	d, err := parent.Sub(base)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Chmod(mode); err != nil {
		return err
	}
	if x.opt.Layer {
		for k, v := range layerXattrs(hdr) {
			if err := d.Setxattr(k, v); err != nil {
				return err
			}
		}
	}
	x.times = append(x.times, dirTime{rel, hdr.ModTime})
	x.res.HasDirs = true
	x.record(rel, "d", mode, 0, "")
	return nil
}

func (x *extractor) file(parent *hostfs.Dir, rel, base string, hdr *tar.Header, tr io.Reader, mode fs.FileMode) error {
	left := x.opt.MaxBytes - x.res.Bytes
	if hdr.Size > left {
		return &LimitError{Name: x.opt.Name, What: "bytes", Max: x.opt.MaxBytes, Entry: hdr.Name}
	}
	if x.opt.Reserve != nil {
		if err := x.opt.Reserve(hdr.Size); err != nil {
			return err
		}
	}
	if err := x.replace(parent, rel, base); err != nil {
		return err
	}
	out, err := parent.Create(base, 0o600)
	if err != nil {
		return err
	}
	var sum hash.Hash
	var w io.Writer = out
	if x.opt.Digest {
		sum = sha256.New()
		w = io.MultiWriter(out, sum)
	}
	n, err := io.Copy(w, &archiveReader{io.LimitReader(tr, left+1)})
	if err == nil && x.opt.Owners {
		err = out.Chown(hdr.Uid, hdr.Gid) // before the mode: chown clears setuid
	}
	if err == nil {
		err = out.Chmod(mode) // after the content: a setuid file is never writable
	}
	if err == nil && x.opt.Layer { // after chown, which drops capabilities
		for k, v := range layerXattrs(hdr) {
			if err = unix.Fsetxattr(int(out.Fd()), k, v, 0); err != nil {
				break
			}
		}
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	x.res.Bytes += n
	if x.res.Bytes > x.opt.MaxBytes {
		return &LimitError{Name: x.opt.Name, What: "bytes", Max: x.opt.MaxBytes, Entry: hdr.Name}
	}
	if err != nil {
		return err
	}
	if err := parent.Chtimes(base, hdr.ModTime, hdr.ModTime); err != nil {
		return err
	}
	x.files[rel] = true
	if sum != nil {
		x.record(rel, "f", mode, n, hex.EncodeToString(sum.Sum(nil)))
	}
	return nil
}

func (x *extractor) hardLink(parent *hostfs.Dir, rel, base string, hdr *tar.Header) error {
	target, err := Name(hdr.Linkname)
	if err != nil || target == "" || !x.files[target] {
		return x.bad("hard link %q points to %q, which is not a file earlier in the archive", hdr.Name, hdr.Linkname)
	}
	tParent, tBase := path.Split(target)
	old, err := x.dst.Sub(strings.TrimSuffix(tParent, "/"))
	if err != nil {
		return x.bad("hard link %q points to %q, which is not a file earlier in the archive", hdr.Name, hdr.Linkname)
	}
	defer old.Close()
	if rel == target {
		return nil // a link to itself: nothing to do
	}
	if err := x.replace(parent, rel, base); err != nil {
		return err
	}
	if err := parent.Link(old, tBase, base); err != nil {
		return err
	}
	x.files[rel] = true
	if rec, ok := x.sums[target]; ok {
		x.sums[rel] = rel + rec[len(target):]
	}
	return nil
}

// record notes an entry for the digest: the last entry of a name wins, as
// it does on disk.
func (x *extractor) record(rel, typ string, mode fs.FileMode, size int64, content string) {
	if !x.opt.Digest {
		return
	}
	x.sums[rel] = fmt.Sprintf("%s\x00%s\x00%o\x00%d\x00%s", rel, typ, uint32(mode), size, content)
}

func (x *extractor) digest() string {
	keys := make([]string, 0, len(x.sums))
	for k := range x.sums {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	h := sha256.New()
	for _, k := range keys {
		io.WriteString(h, x.sums[k])
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// dirTimes sets directory times last: creating their entries changed them.
func (x *extractor) dirTimes() error {
	for i := len(x.times) - 1; i >= 0; i-- {
		dt := x.times[i]
		parentRel, base := path.Split(dt.rel)
		p, err := x.dst.Sub(strings.TrimSuffix(parentRel, "/"))
		if err != nil {
			continue // replaced later in the archive
		}
		_ = p.Chtimes(base, dt.t, dt.t)
		p.Close()
	}
	return nil
}

// archiveReader tells errors reading the archive (a truncated or corrupt
// one: the sender's fault) from errors writing the files (the host's).
type archiveReader struct{ r io.Reader }

type corruptError struct{ err error }

func (e *corruptError) Error() string { return e.err.Error() }

func (a *archiveReader) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = &corruptError{err}
	}
	return n, err
}

// special returns the setuid, setgid and (for directories) sticky bits of
// a tar mode.
func special(m int64, dir bool) fs.FileMode {
	var out fs.FileMode
	if m&0o4000 != 0 {
		out |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= os.ModeSetgid
	}
	if dir && m&0o1000 != 0 {
		out |= os.ModeSticky
	}
	return out
}
