package builder

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// Ignore holds .dockerignore patterns (Docker's syntax: globs relative to
// the context, "**" for any depth, "!" to re-include; later lines win).
type Ignore struct {
	patterns []ignorePattern
}

type ignorePattern struct {
	glob   string
	negate bool
}

// LoadIgnore reads <dir>/.dockerignore; a missing file ignores nothing.
func LoadIgnore(dir string) (*Ignore, error) {
	f, err := os.Open(filepath.Join(dir, ".dockerignore"))
	if os.IsNotExist(err) {
		return &Ignore{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ig := &Ignore{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		p := ignorePattern{}
		if strings.HasPrefix(l, "!") {
			p.negate, l = true, strings.TrimSpace(l[1:])
		}
		l = strings.TrimPrefix(path.Clean("/"+filepath.ToSlash(l)), "/")
		if l == "" {
			continue
		}
		p.glob = l
		ig.patterns = append(ig.patterns, p)
	}
	return ig, sc.Err()
}

// Ignored reports whether rel (slash-separated, relative to the context)
// is excluded. A path is also excluded when one of its parents is.
func (ig *Ignore) Ignored(rel string) bool {
	if ig == nil || len(ig.patterns) == 0 {
		return false
	}
	out := false
	for _, p := range ig.patterns {
		if matchIgnore(p.glob, rel) {
			out = !p.negate
		}
	}
	return out
}

// matchIgnore matches rel or any of its parent directories against glob.
func matchIgnore(glob, rel string) bool {
	parts := strings.Split(rel, "/")
	for i := len(parts); i > 0; i-- {
		if globMatch(strings.Split(glob, "/"), parts[:i]) {
			return true
		}
	}
	return false
}

func globMatch(g, p []string) bool {
	for len(g) > 0 {
		if g[0] == "**" {
			for i := 0; i <= len(p); i++ {
				if globMatch(g[1:], p[i:]) {
					return true
				}
			}
			return false
		}
		if len(p) == 0 {
			return false
		}
		if ok, _ := path.Match(g[0], p[0]); !ok {
			return false
		}
		g, p = g[1:], p[1:]
	}
	return len(p) == 0
}

// ContextFile is one file a COPY step sends.
type ContextFile struct {
	Rel  string // slash-separated, relative to the context
	Info fs.FileInfo
}

// CopyFiles lists what a COPY source matches in the context, directories
// expanded, ignored paths left out, sorted by path.
func CopyFiles(contextDir, src string, ig *Ignore) ([]ContextFile, error) {
	if err := checkContextPath(src); err != nil {
		return nil, errdefs.Invalid("%v", err)
	}
	rel := strings.TrimPrefix(path.Clean("/"+filepath.ToSlash(src)), "/")
	var roots []string
	if rel == "" {
		roots = []string{contextDir}
	} else {
		m, err := filepath.Glob(filepath.Join(contextDir, filepath.FromSlash(rel)))
		if err != nil {
			return nil, errdefs.Invalid("bad COPY source pattern %q: %v", src, err)
		}
		roots = m
	}
	seen := map[string]bool{}
	var out []ContextFile
	for _, root := range roots {
		err := filepath.Walk(root, func(p string, fi fs.FileInfo, err error) error {
			if err != nil {
				return err
			}
			r, err := filepath.Rel(contextDir, p)
			if err != nil {
				return err
			}
			r = filepath.ToSlash(r)
			if r == "." {
				return nil
			}
			if ig.Ignored(r) {
				if fi.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if !seen[r] {
				seen[r] = true
				out = append(out, ContextFile{Rel: r, Info: fi})
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read build context: %w", err)
		}
	}
	if len(out) == 0 {
		return nil, errdefs.Invalid("COPY source %q matches no file in %s (check the path and .dockerignore)", src, contextDir)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Rel < out[j].Rel })
	return out, nil
}

// FilesHash is the cache key of a COPY step's files: the step text, then
// every entry's path, mode, size and content (symlinks: their target).
func FilesHash(contextDir string, s Step, files []ContextFile) (string, error) {
	h := sha256.New()
	io.WriteString(h, "COPY "+s.Args[0]+" "+s.Args[1])
	for _, f := range files {
		io.WriteString(h, f.Rel)
		io.WriteString(h, strconv.FormatUint(uint64(f.Info.Mode()), 10))
		io.WriteString(h, strconv.FormatInt(f.Info.Size(), 10))
		p := filepath.Join(contextDir, filepath.FromSlash(f.Rel))
		switch {
		case f.Info.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return "", err
			}
			io.WriteString(h, t)
		case f.Info.Mode().IsRegular():
			fh, err := os.Open(p)
			if err != nil {
				return "", err
			}
			_, err = io.Copy(h, fh)
			fh.Close()
			if err != nil {
				return "", err
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// WriteTar writes the files as a gzip-compressed tar with context-relative
// paths, the format the upload URL accepts (and the E2B SDK sends).
func WriteTar(w io.Writer, contextDir string, files []ContextFile) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	for _, f := range files {
		p := filepath.Join(contextDir, filepath.FromSlash(f.Rel))
		link := ""
		if f.Info.Mode()&fs.ModeSymlink != 0 {
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			link = t
		}
		hdr, err := tar.FileInfoHeader(f.Info, link)
		if err != nil {
			return fmt.Errorf("tar %s: %w", f.Rel, err)
		}
		hdr.Name = f.Rel
		if f.Info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if f.Info.Mode().IsRegular() {
			fh, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, fh)
			fh.Close()
			if err != nil {
				return fmt.Errorf("tar %s: %w", f.Rel, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}
