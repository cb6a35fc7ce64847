package builder

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/sbxdev/sbx/internal/archive"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/hostfs"
)

// ADD unpacks local tar archives (plain, gzip or bzip2 compressed) into its
// destination, as Docker does. Archives come from the user's build context,
// and unpacking happens on the host (in the step's scratch directory) before
// the build sandbox merges the result into the image, so it goes through
// internal/archive: nothing may land outside the destination or go through
// a symlink, no device node is created, and the unpacked size is capped.

// MaxUnpackEntries bounds the entries of one archive ADD unpacks, so an
// archive of millions of empty files cannot exhaust inodes.
const MaxUnpackEntries = 1 << 20

// unpackLimits bound what one archive may unpack to.
type unpackLimits struct {
	maxBytes   int64 // regular file content, in total
	maxEntries int
}

// archiveFormat names the compression of f when it is an archive ADD
// unpacks: "tar", "gzip" or "bzip2"; "" for any other file (copied as is).
// xz and zstd compressed tar archives are recognised but refused. f is
// left at its start.
func archiveFormat(f *os.File, name string) (string, error) {
	defer f.Seek(0, io.SeekStart) //nolint:errcheck // a failure shows at the next read
	kind, r, err := archive.Decompress(bufio.NewReader(f))
	switch {
	case kind == "xz":
		return "", errdefs.Invalid("%s is an xz archive, which ADD cannot unpack: use .tar.gz or .tar.bz2 (or COPY it and RUN tar -xJf)", name)
	case kind == "zstd":
		return "", errdefs.Invalid("%s is a zstd archive, which ADD cannot unpack: use .tar.gz or .tar.bz2 (or COPY it and RUN tar --zstd -xf)", name)
	case err != nil || kind == "":
		// Docker unpacks only what is a tar archive once decompressed; a
		// lone .gz of something else, or a broken archive, is copied as is.
		return "", nil
	}
	if _, terr := tar.NewReader(r).Next(); terr != nil {
		return "", nil
	}
	return kind, nil
}

// unpack extracts the tar archive f (compressed or not), named name, into
// dir, merging with what dir holds. Device nodes and FIFOs are skipped and
// reported through note. The error names the archive, the entry and what
// to do.
func unpack(f *os.File, name string, dir *hostfs.Dir, lim unpackLimits, note func(string)) (int, error) {
	_, r, err := archive.Decompress(bufio.NewReader(f))
	if err != nil {
		return 0, errdefs.Invalid("ADD %s: %s", name, errdefs.Message(err))
	}
	res, err := archive.Extract(r, dir, archive.Options{Name: "ADD " + name, MaxBytes: lim.maxBytes,
		MaxEntries: lim.maxEntries, SkipSpecial: true, Note: note})
	var le *archive.LimitError
	switch {
	case errors.As(err, &le) && le.What == "entries":
		return res.Entries, errdefs.Exhausted("ADD %s: more than %d entries; unpack it with RUN tar in the build instead", name, le.Max)
	case errors.As(err, &le):
		return res.Entries, errdefs.Exhausted("ADD %s: unpacks to more than %s (the build's disk limit) at entry %q; make the archive smaller or raise the disk limit (sbx serve --build-disk)",
			name, archive.FormatSize(le.Max), le.Entry)
	}
	return res.Entries, err
}

// unpackMatch unpacks the regular file name in src into stageDir when it is
// a tar archive and reports whether it was one.
func unpackMatch(src *hostfs.Dir, name string, stageDir *hostfs.Dir, lim unpackLimits, note func(string)) (bool, error) {
	f, err := src.Open(name)
	if err != nil {
		return false, err
	}
	defer f.Close()
	kind, err := archiveFormat(f, name)
	if err != nil || kind == "" {
		return false, err
	}
	n, err := unpack(f, name, stageDir, lim, note)
	if err != nil {
		return false, err
	}
	note(fmt.Sprintf("unpacked %s (%s archive, %d entries)", name, kind, n))
	return true, nil
}
