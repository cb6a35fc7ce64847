package volume

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/hostfs"
)

// The /volumecontent API (E2B's volume-content spec, what the SDK's Volume
// class calls), authorized by the volume's own token. Every path is
// resolved beneath the volume's root by internal/hostfs: no symlink is
// followed, so one a sandbox planted ("etc -> /etc") is refused, never
// read through; listings show links as links.

// ContentHandler serves /volumecontent/{volumeID}/{dir,path,file}.
type ContentHandler struct {
	svc *Service
	log *slog.Logger
}

// NewContentHandler returns the handler.
func NewContentHandler(svc *Service, log *slog.Logger) *ContentHandler {
	return &ContentHandler{svc: svc, log: log}
}

// Patterns are the routes, for registration on a mux that needs no API key.
func (h *ContentHandler) Register(mux interface {
	HandleFunc(string, func(http.ResponseWriter, *http.Request))
}) {
	mux.HandleFunc("GET /volumecontent/{id}/dir", h.wrap(h.list))
	mux.HandleFunc("POST /volumecontent/{id}/dir", h.wrap(h.mkdir))
	mux.HandleFunc("GET /volumecontent/{id}/path", h.wrap(h.stat))
	mux.HandleFunc("PATCH /volumecontent/{id}/path", h.wrap(h.patch))
	mux.HandleFunc("DELETE /volumecontent/{id}/path", h.wrap(h.remove))
	mux.HandleFunc("GET /volumecontent/{id}/file", h.wrap(h.read))
	mux.HandleFunc("PUT /volumecontent/{id}/file", h.wrap(h.write))
}

// EntryStat is E2B's VolumeEntryStat.
type EntryStat struct {
	Name   string    `json:"name"`
	Path   string    `json:"path"`
	Type   string    `json:"type"`
	Size   int64     `json:"size"`
	Mode   uint32    `json:"mode"`
	UID    uint32    `json:"uid"`
	GID    uint32    `json:"gid"`
	Atime  time.Time `json:"atime"`
	Mtime  time.Time `json:"mtime"`
	Ctime  time.Time `json:"ctime"`
	Target string    `json:"target,omitempty"`
}

type op func(w http.ResponseWriter, r *http.Request, root *hostfs.Dir, p string) error

func (h *ContentHandler) wrap(fn op) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		v, err := h.svc.Authorize(r.Context(), r.PathValue("id"), tok)
		if err == nil {
			var root *hostfs.Dir
			if root, err = h.svc.Root(r.Context(), v.ID); err == nil {
				defer root.Close()
				var p string
				if p, err = cleanPath(r.URL.Query().Get("path")); err == nil {
					err = fn(w, r, root, p)
				}
			}
		}
		if err != nil {
			errdefs.WriteHTTP(w, h.log, mapFSError(err))
		}
	}
}

// cleanPath turns the query's path into one relative to the volume root
// ("" = the root). ".." cannot climb above the root.
func cleanPath(p string) (string, error) {
	if strings.ContainsRune(p, 0) || len(p) > 4096 {
		return "", errdefs.Invalid("path: at most 4096 bytes, no NUL")
	}
	return strings.TrimPrefix(path.Clean("/"+p), "/"), nil
}

func mapFSError(err error) error {
	switch {
	case errors.Is(err, hostfs.ErrSymlink), errors.Is(err, unix.ELOOP):
		return errdefs.Invalid("the path goes through a symbolic link, which the volume API does not follow: %v", err)
	case errors.Is(err, hostfs.ErrNotDir), errors.Is(err, unix.ENOTDIR):
		return errdefs.Invalid("a component of the path is not a directory")
	case errors.Is(err, hostfs.ErrNotRegular):
		return errdefs.Invalid("not a regular file")
	case errors.Is(err, os.ErrNotExist), errors.Is(err, unix.ENOENT):
		return errdefs.NotFound("path not found")
	case errors.Is(err, os.ErrExist), errors.Is(err, unix.EEXIST):
		return errdefs.Exists("path exists")
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
		return errdefs.Exhausted("the volume is full (its size is its cap)")
	case errors.Is(err, unix.ENOTEMPTY):
		return errdefs.Precondition("directory not empty")
	}
	return err
}

// split returns the parent directory (opened beneath root) and the base
// name of p; p must not be the root.
func split(root *hostfs.Dir, p string, mkParents bool) (*hostfs.Dir, string, error) {
	if p == "" {
		return nil, "", errdefs.Invalid("path: the volume's root cannot be the target of this operation")
	}
	dir, base := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	var d *hostfs.Dir
	var err error
	if mkParents {
		d, err = root.MkdirAll(dir, 0o755)
	} else {
		d, err = root.Sub(dir)
	}
	return d, base, err
}

func statEntry(parent *hostfs.Dir, name, full string) (EntryStat, error) {
	var st unix.Stat_t
	var err error
	if name == "." {
		st, err = parent.Stat(".")
	} else {
		st, err = parent.Lstat(name)
	}
	if err != nil {
		return EntryStat{}, err
	}
	e := EntryStat{Name: path.Base("/" + full), Path: "/" + full, Size: st.Size, Mode: st.Mode & 0o7777,
		UID: st.Uid, GID: st.Gid, Atime: ts(st.Atim), Mtime: ts(st.Mtim), Ctime: ts(st.Ctim)}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		e.Type = "file"
	case unix.S_IFDIR:
		e.Type = "directory"
	case unix.S_IFLNK:
		e.Type = "symlink"
		e.Target, _ = parent.Readlink(name)
	default:
		e.Type = "unknown"
	}
	if full == "" {
		e.Name = "/"
	}
	return e, nil
}

func ts(t unix.Timespec) time.Time { return time.Unix(t.Unix()).UTC() }

// stat of p: the root is stat'ed as "." of itself.
func statPath(root *hostfs.Dir, p string) (EntryStat, error) {
	if p == "" {
		return statEntry(root, ".", "")
	}
	parent, base, err := split(root, p, false)
	if err != nil {
		return EntryStat{}, err
	}
	defer parent.Close()
	return statEntry(parent, base, p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (h *ContentHandler) stat(w http.ResponseWriter, r *http.Request, root *hostfs.Dir, p string) error {
	e, err := statPath(root, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, e)
	return nil
}

const maxListEntries = 10000

func (h *ContentHandler) list(w http.ResponseWriter, r *http.Request, root *hostfs.Dir, p string) error {
	depth := 1
	if v := r.URL.Query().Get("depth"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 32 {
			return errdefs.Invalid("depth %q: want 1 to 32", v)
		}
		depth = n
	}
	d, err := root.Sub(p)
	if err != nil {
		return err
	}
	defer d.Close()
	out := []EntryStat{}
	if err := walk(d, p, depth, &out); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func tooMany() error {
	return errdefs.Exhausted("more than %d entries: list a smaller depth or a subdirectory", maxListEntries)
}

func walk(d *hostfs.Dir, p string, depth int, out *[]EntryStat) error {
	// A sandbox can fill a directory of its volume with millions of names:
	// read no more than the listing has room for, and refuse the rest
	// unread.
	entries, more, err := d.ReadDirN(maxListEntries - len(*out) + 1)
	if err != nil {
		return err
	}
	if more {
		return tooMany()
	}
	for _, e := range entries {
		if len(*out) >= maxListEntries {
			return tooMany()
		}
		full := path.Join(p, e.Name)
		st, err := statEntry(d, e.Name, full)
		if err != nil {
			continue // removed meanwhile
		}
		*out = append(*out, st)
		if depth > 1 && st.Type == "directory" {
			sub, err := d.Sub(e.Name)
			if err != nil {
				continue // replaced by a link meanwhile: not followed
			}
			err = walk(sub, full, depth-1, out)
			sub.Close()
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// removeChildren empties d a batch of names at a time, so a directory of
// millions is never held whole. Each batch is read afresh: removing names
// while reading on leaves the directory's offsets undefined.
func removeChildren(d *hostfs.Dir, depth int) error {
	for {
		r, err := d.Reader()
		if err != nil {
			return err
		}
		names, err := r.Names(removeBatch)
		r.Close()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, n := range names {
			if err := removeAt(d, n, depth); err != nil && !errors.Is(err, unix.ENOENT) {
				return err
			}
		}
	}
}

const removeBatch = 1024

// owner reads uid, gid and mode from the query (E2B's VolumeMetadataOpts).
func owner(r *http.Request, defMode os.FileMode) (uid, gid int, mode os.FileMode, err error) {
	q := r.URL.Query()
	num := func(name string, def, max int64) int64 {
		v := q.Get(name)
		if v == "" || err != nil {
			return def
		}
		n, perr := strconv.ParseInt(v, 10, 64)
		if perr != nil || n < 0 || n > max {
			err = errdefs.Invalid("%s %q: want 0 to %d", name, v, max)
		}
		return n
	}
	uid = int(num("uid", DefaultUID, 65535))
	gid = int(num("gid", DefaultUID, 65535))
	mode = os.FileMode(num("mode", int64(defMode), 0o777))
	return uid, gid, mode, err
}

func (h *ContentHandler) mkdir(w http.ResponseWriter, r *http.Request, root *hostfs.Dir, p string) error {
	uid, gid, mode, err := owner(r, 0o755)
	if err != nil {
		return err
	}
	force := r.URL.Query().Get("force") == "true"
	parent, base, err := split(root, p, force)
	if err != nil {
		return err
	}
	defer parent.Close()
	if err := parent.Mkdir(base, mode); err != nil && !(force && errors.Is(err, os.ErrExist)) {
		return err
	}
	if err := errors.Join(parent.Lchown(base, uid, gid), parent.ChmodName(base, mode)); err != nil {
		return err
	}
	e, err := statEntry(parent, base, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, e)
	return nil
}

func (h *ContentHandler) patch(w http.ResponseWriter, r *http.Request, root *hostfs.Dir, p string) error {
	var body struct {
		UID  *int `json:"uid"`
		GID  *int `json:"gid"`
		Mode *int `json:"mode"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
		return errdefs.Invalid("body: want JSON {uid, gid, mode}: %v", err)
	}
	parent, base, err := split(root, p, false)
	if err != nil {
		return err
	}
	defer parent.Close()
	st, err := parent.Lstat(base)
	if err != nil {
		return err
	}
	uid, gid := int(st.Uid), int(st.Gid)
	for _, v := range []*int{body.UID, body.GID, body.Mode} {
		if v != nil && (*v < 0 || *v > 65535) {
			return errdefs.Invalid("uid, gid and mode must be between 0 and 65535")
		}
	}
	if body.UID != nil {
		uid = *body.UID
	}
	if body.GID != nil {
		gid = *body.GID
	}
	if err := parent.Lchown(base, uid, gid); err != nil {
		return err
	}
	if body.Mode != nil {
		if err := parent.ChmodName(base, os.FileMode(*body.Mode&0o777)); err != nil {
			return err
		}
	}
	e, err := statEntry(parent, base, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, e)
	return nil
}

func (h *ContentHandler) read(w http.ResponseWriter, r *http.Request, root *hostfs.Dir, p string) error {
	if p == "" {
		return errdefs.Invalid("path: the root is a directory")
	}
	f, err := root.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
	_, _ = io.Copy(w, io.LimitReader(f, fi.Size()))
	return nil
}

func (h *ContentHandler) write(w http.ResponseWriter, r *http.Request, root *hostfs.Dir, p string) error {
	uid, gid, mode, err := owner(r, 0o644)
	if err != nil {
		return err
	}
	// No file can be larger than the volume: a body said to be is refused
	// before a byte is written; one that turns out to be stops at the cap.
	limit := h.svc.cfg.SizeMB << 20
	if r.ContentLength > limit {
		return tooLarge(limit)
	}
	parent, base, err := split(root, p, r.URL.Query().Get("force") == "true")
	if err != nil {
		return err
	}
	defer parent.Close()
	body := http.MaxBytesReader(w, r.Body, limit)
	if err := replaceFile(parent, base, body, uid, gid, mode); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return tooLarge(limit)
		}
		return err
	}
	e, err := statEntry(parent, base, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, e)
	return nil
}

func tooLarge(limit int64) error {
	return errdefs.TooLarge("the file is larger than the volume: a file may hold at most %d MiB; split it or use a larger volume", limit>>20)
}

// replaceFile writes body to a new file in dir under a temporary name,
// owned and moded as asked, and renames it over name once body is whole:
// a write that fails (the body too large, the volume full, the client
// gone) leaves the old file as it was and no partial one. Until the
// rename the volume holds both, so replacing a file needs room for the
// two. An existing name that is not a regular file is refused, as
// writing through it was before.
func replaceFile(dir *hostfs.Dir, name string, body io.Reader, uid, gid int, mode os.FileMode) (err error) {
	if st, err := dir.Lstat(name); err == nil {
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
		case unix.S_IFLNK:
			return hostfs.ErrSymlink
		default:
			return hostfs.ErrNotRegular
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	tmp := ".sbx-write-" + strconv.FormatUint(rand.Uint64(), 36)
	f, err := dir.Create(tmp, mode)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = dir.Remove(tmp)
		}
	}()
	_, err = io.Copy(f, body)
	if err == nil {
		err = errors.Join(f.Chown(uid, gid), f.Chmod(mode)) // chmod after chown, which clears setuid bits
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return dir.Rename(tmp, dir, name)
}

func (h *ContentHandler) remove(w http.ResponseWriter, r *http.Request, root *hostfs.Dir, p string) error {
	parent, base, err := split(root, p, false)
	if err != nil {
		return err
	}
	defer parent.Close()
	if err := removeAll(parent, base); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// removeAll removes name in d and, for a directory, everything under it,
// descending only into real directories (a link is removed, not followed)
// and at most maxRemoveDepth deep.
func removeAll(d *hostfs.Dir, name string) error {
	return removeAt(d, name, 0)
}

// maxRemoveDepth bounds how deep a delete descends. Each level holds a
// descriptor and a path as long as the level's, and a sandbox makes a
// chain of a million nested directories in its volume with a loop of mkdir
// and cd: followed down, it would cost the server a million fds and
// terabytes of path strings. Deeper trees are refused (after what is
// above the bound went); deleting the volume removes any tree.
const maxRemoveDepth = 256

func removeAt(d *hostfs.Dir, name string, depth int) error {
	st, err := d.Lstat(name)
	if err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if depth >= maxRemoveDepth {
			return errdefs.Exhausted("directories nested more than %d deep: delete the volume, or the tree from inside a sandbox", maxRemoveDepth)
		}
		sub, err := d.Sub(name)
		if err != nil {
			return err
		}
		err = removeChildren(sub, depth+1)
		sub.Close()
		if err != nil {
			return err
		}
	}
	return d.Remove(name)
}
