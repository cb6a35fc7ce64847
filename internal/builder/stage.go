package builder

import (
	"errors"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/hostfs"
)

// stage copies what src (a path or glob relative to the context) matches
// from the upload dir root into stageDir, the way Docker's COPY lays it
// out: a directory's contents, or files by their base name. It returns the
// base name when exactly one file matched (so the destination may rename
// it). With unpack (ADD), a matched file that is a tar archive is unpacked
// into stageDir instead.
//
// The context is a tenant's: its symlinks resolve inside it (as if it were
// the root directory), a matched symlink is copied as a symlink, and
// nothing beneath a matched directory is followed, so no host file is ever
// read.
func stage(root *hostfs.Dir, src string, stageDir *hostfs.Dir, unpack *unpackLimits, note func(string)) (single string, err error) {
	rel := strings.TrimPrefix(path.Clean("/"+src), "/")
	if rel == "" {
		return "", hostfs.CopyTree(root, stageDir, nil)
	}
	matches, err := contextGlob(root, rel)
	if err != nil {
		return "", errdefs.Invalid("bad source pattern %q: %v", src, err)
	}
	if len(matches) == 0 {
		return "", errdefs.Invalid("COPY source %q matches no file in the build context (check the path and .dockerignore)", src)
	}
	for _, m := range matches {
		parent, base, st, err := lookup(root, m)
		if err != nil {
			return "", err
		}
		unpacked, err := stageOne(parent, base, st, stageDir, unpack, note)
		parent.Close()
		if err != nil {
			return "", err
		}
		// An unpacked archive is a directory's worth of files, not one to rename.
		if st.Mode&unix.S_IFMT != unix.S_IFDIR && !unpacked && len(matches) == 1 {
			single = base
		}
	}
	return single, nil
}

// stageOne stages one match and reports whether it was an archive ADD unpacked.
func stageOne(parent *hostfs.Dir, base string, st unix.Stat_t, stageDir *hostfs.Dir, unpack *unpackLimits, note func(string)) (bool, error) {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		d, err := parent.Sub(base)
		if err != nil {
			return false, err
		}
		defer d.Close()
		return false, hostfs.CopyTree(d, stageDir, nil)
	case unix.S_IFREG:
		if unpack != nil {
			if done, err := unpackMatch(parent, base, stageDir, *unpack, note); err != nil || done {
				return done, err
			}
		}
	}
	return false, hostfs.CopyEntry(parent, base, stageDir, base, nil)
}

// lookup finds rel in the context: its parent directory (resolved inside
// the context) and the status of its last component itself.
func lookup(root *hostfs.Dir, rel string) (*hostfs.Dir, string, unix.Stat_t, error) {
	dir, base := path.Split(rel)
	parent, err := root.SubInRoot(strings.TrimSuffix(dir, "/"))
	if err != nil {
		return nil, "", unix.Stat_t{}, err
	}
	st, err := parent.Lstat(base)
	if err != nil {
		parent.Close()
		return nil, "", st, err
	}
	return parent, base, st, nil
}

// contextGlob expands a slash-separated pattern relative to the context as
// filepath.Glob would, with the context's symlinks resolved inside it.
func contextGlob(root *hostfs.Dir, rel string) ([]string, error) {
	cands := []string{""}
	for _, part := range strings.Split(rel, "/") {
		if _, err := path.Match(part, ""); err != nil {
			return nil, err
		}
		var next []string
		for _, c := range cands {
			if !strings.ContainsAny(part, `*?[\`) {
				next = append(next, path.Join(c, part))
				continue
			}
			d, err := root.SubInRoot(c)
			if err != nil {
				continue // not a directory: nothing below it matches
			}
			ents, err := d.ReadDir()
			d.Close()
			if err != nil {
				return nil, err
			}
			for _, e := range ents {
				if ok, _ := path.Match(part, e.Name); ok {
					next = append(next, path.Join(c, e.Name))
				}
			}
		}
		cands = next
	}
	out := cands[:0]
	for _, c := range cands {
		parent, _, _, err := lookup(root, c)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		parent.Close()
		out = append(out, c)
	}
	return out, nil
}
