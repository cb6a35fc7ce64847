package template

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/archive"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/hostfs"
)

var hashRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// teamRE is what a team ID must look like to name its upload directory
// (store.Team IDs are UUIDs).
var teamRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`)

// uploads keeps the files of COPY steps, per team and files hash:
// <dir>/<team>/<hash>/files holds them at their paths relative to the
// build context, <dir>/<team>/<hash>/complete the digest of their content.
//
// A files hash is the client's (the E2B SDKs' calculateFilesHash, or
// `sbx template build`): SHA-256 of "COPY <src> <dest>", then per matched
// path its relative name, st_mode, st_size and content (a symlink's
// target). The server cannot recompute it from an upload: the tar carries
// no st_size for directories (it varies with the client's filesystem),
// and a step's src/dest arrive only when the build starts. So an upload is
// bound instead: to its team (one team's COPY never sees another's files,
// and the signed URL names the team), and to its first content: a second
// upload for the same (team, hash) must unpack to the same digest (paths,
// types, modes, sizes, contents; times and owners aside), else it is
// refused, so whoever holds an upload URL cannot swap files under a hash a
// build already uses.
type uploads struct {
	dir    string
	secret []byte
	max    int64 // bytes, compressed and extracted alike

	mu sync.Mutex // orders the compare-and-rename of uploads of one hash
	// shared: uploads go to the blob store (uploadblobs.go); nil: here.
	shared *SharedUploads
}

// uploadMeta is the "complete" marker of an upload.
type uploadMeta struct {
	Digest   string    `json:"digest"`
	Entries  int       `json:"entries"`
	Uploaded time.Time `json:"uploaded"`
}

func checkUploadKey(team, hash string) error {
	if !hashRE.MatchString(hash) {
		return errdefs.Invalid("files hash %q must be 64 lowercase hex characters", hash)
	}
	if !teamRE.MatchString(team) {
		return errdefs.Invalid("team %q cannot own uploads", team)
	}
	return nil
}

func (u *uploads) hashDir(team, hash string) string { return filepath.Join(u.dir, team, hash) }

func (u *uploads) filesDir(team, hash string) string {
	return filepath.Join(u.hashDir(team, hash), "files")
}

func (u *uploads) meta(team, hash string) (uploadMeta, bool) {
	var m uploadMeta
	if checkUploadKey(team, hash) != nil {
		return m, false
	}
	b, err := os.ReadFile(filepath.Join(u.hashDir(team, hash), "complete"))
	if err != nil {
		return m, false
	}
	_ = json.Unmarshal(b, &m) // an older marker (plain time): present, digest unknown
	return m, true
}

func (u *uploads) present(team, hash string) bool {
	_, ok := u.meta(team, hash)
	return ok
}

// sign returns the query string that authorises one team's PUT of hash
// until exp.
func (u *uploads) sign(team, hash string, exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	q := url.Values{"team": {team}, "expires": {e}, "signature": {u.mac(team, hash, e)}}
	return q.Encode()
}

func (u *uploads) mac(team, hash, exp string) string {
	m := hmac.New(sha256.New, u.secret)
	m.Write([]byte(team + "\x00" + hash + "\x00" + exp))
	return hex.EncodeToString(m.Sum(nil))
}

func (u *uploads) verify(team, hash, exp, sig string, now time.Time) error {
	e, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || !hmac.Equal([]byte(sig), []byte(u.mac(team, hash, exp))) {
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
	return fmt.Sprintf("build context too large: more than %s; leave big files out with .dockerignore or download them in a RUN step", archive.FormatSize(e.max))
}

// maxUploadEntries bounds the entries of one upload (inodes).
const maxUploadEntries = 1 << 20

// store extracts a tar (optionally gzip- or bzip2-compressed) into the
// team's directory for hash, through internal/archive: entries must stay
// inside it and never go through a symlink; devices are refused.
func (u *uploads) store(ctx context.Context, team, hash string, body io.Reader) (int, error) {
	if err := checkUploadKey(team, hash); err != nil {
		return 0, err
	}
	teamDir := filepath.Join(u.dir, team)
	if err := os.MkdirAll(teamDir, 0o700); err != nil {
		return 0, err
	}
	tmp, err := os.MkdirTemp(teamDir, ".upload-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	var reserve func(int64) error
	if u.shared != nil {
		// Counted as the files arrive, not after: this disk never holds
		// more of a team's upload than its budget has left.
		var release func()
		if reserve, release, err = u.shared.reserve(ctx, team, hash); err != nil {
			return 0, err
		}
		defer release() // once published and recorded, or refused
	}
	lim := &limitReader{r: body, n: u.max}
	res, err := extract(lim, filepath.Join(tmp, "files"), u.max, reserve)
	if err == nil {
		// A tar's end may come before the body's: what follows still counts
		// (bounded by the cap).
		_, err = io.Copy(io.Discard, lim)
	}
	if lim.over {
		return 0, errdefs.TooLarge("%v", errTooLarge{u.max})
	}
	if err != nil {
		return 0, err
	}
	if u.shared != nil {
		return u.publish(ctx, team, hash, filepath.Join(tmp, "files"), res)
	}
	meta, _ := json.Marshal(uploadMeta{Digest: res.Digest, Entries: res.Entries, Uploaded: time.Now().UTC()})
	if err := os.WriteFile(filepath.Join(tmp, "complete"), append(meta, '\n'), 0o600); err != nil {
		return 0, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if old, ok := u.meta(team, hash); ok {
		if old.Digest != "" && old.Digest != res.Digest {
			return 0, errdefs.Conflict("files for hash %s were uploaded already with other content; a files hash names one content: compute it from the files (the E2B SDKs and sbx template build do)", hash)
		}
		return res.Entries, nil // the same files again
	}
	final := u.hashDir(team, hash)
	_ = os.RemoveAll(final) // leftovers of an interrupted upload
	if err := os.Rename(tmp, final); err != nil {
		return 0, err
	}
	return res.Entries, nil
}

// limitReader passes at most n bytes of r through and records whether r
// held more. It reads no byte of its own before the cap is reached: only a
// read at the cap asks r for one byte more, so a body of exactly n bytes is
// taken whether its end comes with the last bytes (a body with a length) or
// with a read of its own (chunked).
type limitReader struct {
	r    io.Reader
	n    int64
	over bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.over {
		return 0, io.ErrUnexpectedEOF
	}
	if l.n <= 0 {
		var one [1]byte
		m, err := l.r.Read(one[:])
		if m > 0 {
			l.over = true
			return 0, io.ErrUnexpectedEOF
		}
		return 0, err // io.EOF at the end; (0, nil) asks the caller to read again
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// extract unpacks an upload into dst (created here); reserve, when set, is
// asked for each file's size before it is written.
func extract(r io.Reader, dst string, max int64, reserve func(int64) error) (archive.Result, error) {
	_, tr, err := archive.Decompress(bufio.NewReader(r))
	if err != nil {
		return archive.Result{}, errdefs.Invalid("upload: %s", errdefs.Message(err))
	}
	if err := os.Mkdir(dst, 0o755); err != nil {
		return archive.Result{}, err
	}
	d, err := hostfs.OpenDir(dst)
	if err != nil {
		return archive.Result{}, err
	}
	defer d.Close()
	res, err := archive.Extract(tr, d, archive.Options{Name: "upload", MaxBytes: max, MaxEntries: maxUploadEntries, Digest: true,
		Reserve: reserve})
	var le *archive.LimitError
	switch {
	case errors.As(err, &le) && le.What == "entries":
		return res, errdefs.TooLarge("upload: more than %d files; leave some out with .dockerignore", le.Max)
	case errors.As(err, &le):
		return res, errdefs.TooLarge("%v", errTooLarge{max})
	}
	return res, err
}

// removeLegacyUploads drops uploads of the layout before uploads were per
// team (<dir>/<hash>): any team's COPY could use them; and uploads a
// previous process left unfinished (<dir>/<team>/.upload-*).
func removeLegacyUploads(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if hashRE.MatchString(e.Name()) {
			if err := os.RemoveAll(p); err != nil {
				return err
			}
			continue
		}
		partial, _ := filepath.Glob(filepath.Join(p, ".upload-*"))
		for _, q := range partial {
			if err := os.RemoveAll(q); err != nil {
				return err
			}
		}
	}
	return nil
}
