package template

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
)

var hashRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// uploads keeps the files of COPY steps, one directory per files hash:
// <dir>/<hash>/files holds them at their paths relative to the build context.
type uploads struct {
	dir    string
	secret []byte
	max    int64 // bytes, compressed and extracted alike
}

func (u *uploads) filesDir(hash string) string { return filepath.Join(u.dir, hash, "files") }

func (u *uploads) present(hash string) bool {
	_, err := os.Stat(filepath.Join(u.dir, hash, "complete"))
	return err == nil
}

// sign returns the query string that authorises one PUT of hash until exp.
func (u *uploads) sign(hash string, exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	return "expires=" + e + "&signature=" + u.mac(hash, e)
}

func (u *uploads) mac(hash, exp string) string {
	m := hmac.New(sha256.New, u.secret)
	m.Write([]byte(hash + "\x00" + exp))
	return hex.EncodeToString(m.Sum(nil))
}

func (u *uploads) verify(hash, exp, sig string, now time.Time) error {
	e, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || !hmac.Equal([]byte(sig), []byte(u.mac(hash, exp))) {
		return errdefs.Wrap(errdefs.ErrPermissionDenied, nil, "upload URL signature is invalid; ask GET /templates/{id}/files/{hash} for a new URL")
	}
	if now.Unix() > e {
		return errdefs.Wrap(errdefs.ErrPermissionDenied, nil, "upload URL expired; ask GET /templates/{id}/files/{hash} for a new URL")
	}
	return nil
}

// errTooLarge is returned when an upload exceeds the limit.
type errTooLarge struct{ max int64 }

func (e errTooLarge) Error() string {
	return fmt.Sprintf("build context too large: more than %d MiB; leave big files out with .dockerignore or download them in a RUN step", e.max>>20)
}

// store extracts a tar (optionally gzip-compressed) into the hash's
// directory. Entries must stay inside it; devices are refused.
func (u *uploads) store(hash string, body io.Reader) (int, error) {
	if !hashRE.MatchString(hash) {
		return 0, errdefs.Invalid("files hash %q must be 64 lowercase hex characters", hash)
	}
	if err := os.MkdirAll(u.dir, 0o700); err != nil {
		return 0, err
	}
	tmp, err := os.MkdirTemp(u.dir, ".upload-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	lim := &limitReader{r: body, n: u.max}
	n, err := extract(lim, filepath.Join(tmp, "files"), u.max)
	if lim.over {
		return 0, errdefs.Exhausted("%v", errTooLarge{u.max})
	}
	if err != nil {
		return 0, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "complete"), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
		return 0, err
	}
	final := filepath.Join(u.dir, hash)
	if u.present(hash) { // uploaded twice: keep the first
		return n, nil
	}
	_ = os.RemoveAll(final)
	if err := os.Rename(tmp, final); err != nil {
		return 0, err
	}
	return n, nil
}

type limitReader struct {
	r    io.Reader
	n    int64
	over bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		l.over = true
		return 0, io.ErrUnexpectedEOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	if l.n <= 0 && err == nil {
		// Peek: exactly max bytes is fine, one more is not.
		var one [1]byte
		if m, _ := l.r.Read(one[:]); m > 0 {
			l.over = true
			return n, io.ErrUnexpectedEOF
		}
	}
	return n, err
}

func extract(r io.Reader, dst string, max int64) (int, error) {
	br := bufio.NewReader(r)
	var src io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return 0, errdefs.Invalid("upload is not a valid gzip stream: %v", err)
		}
		src = gz
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return 0, err
	}
	tr := tar.NewReader(src)
	var total int64
	n := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, errdefs.Invalid("upload is not a valid tar archive: %v", err)
		}
		name := path.Clean("/" + strings.TrimPrefix(h.Name, "./"))
		if strings.Contains(h.Name, "..") && hasDotDot(h.Name) {
			return n, errdefs.Invalid("tar entry %q leaves the build context", h.Name)
		}
		if name == "/" {
			continue
		}
		target := filepath.Join(dst, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return n, err
		}
		mode := os.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return n, err
			}
			_ = os.Chmod(target, mode|0o700)
		case tar.TypeReg:
			total += h.Size
			if total > max {
				return n, errdefs.Exhausted("%v", errTooLarge{max})
			}
			f, err := os.OpenFile(target, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
			if err != nil {
				return n, err
			}
			if _, err := io.Copy(f, tr); err != nil {
				f.Close()
				return n, fmt.Errorf("extract %s: %w", h.Name, err)
			}
			if err := f.Close(); err != nil {
				return n, err
			}
			_ = os.Chmod(target, mode)
		case tar.TypeSymlink:
			// Kept as a link; the builder refuses sources that resolve outside.
			_ = os.Remove(target)
			if err := os.Symlink(h.Linkname, target); err != nil {
				return n, err
			}
		case tar.TypeLink:
			old := filepath.Join(dst, filepath.FromSlash(path.Clean("/"+h.Linkname)))
			if hasDotDot(h.Linkname) {
				return n, errdefs.Invalid("tar hard link %q leaves the build context", h.Name)
			}
			_ = os.Remove(target)
			if err := os.Link(old, target); err != nil {
				return n, fmt.Errorf("extract hard link %s: %w", h.Name, err)
			}
		default:
			return n, errdefs.Invalid("tar entry %q has an unsupported type (%c); only files, directories and links can be copied", h.Name, h.Typeflag)
		}
		_ = os.Lchown(target, 0, 0)
		if !h.ModTime.IsZero() && h.Typeflag != tar.TypeSymlink {
			_ = os.Chtimes(target, h.ModTime, h.ModTime)
		}
		n++
	}
}

func hasDotDot(p string) bool {
	for _, part := range strings.Split(filepath.ToSlash(p), "/") {
		if part == ".." {
			return true
		}
	}
	return false
}
