package files

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/envd/connect"
	"github.com/sbxdev/sbx/internal/envd/filesystem"
	"github.com/sbxdev/sbx/internal/envd/users"
)

// Session is what /files needs from envd's per-sandbox state.
type Session interface {
	// LookupUser resolves a user name; "" is the sandbox's default user.
	LookupUser(name string) (*users.User, error)
	// AccessToken is the token set by /init, "" when the sandbox is open.
	AccessToken() string
}

// Handler serves GET and POST /files.
type Handler struct {
	sess Session
	log  *slog.Logger
	now  func() time.Time
}

// NewHandler returns the /files handler; now is the clock used for
// signature expiry (time.Now in production).
func NewHandler(sess Session, log *slog.Logger, now func() time.Time) *Handler {
	return &Handler{sess: sess, log: log, now: now}
}

type httpError struct {
	status  int
	message string
}

// WriteError writes envd's JSON error body {"code":N,"message":...}.
func WriteError(w http.ResponseWriter, status int, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Encoding")
	w.Header().Del("Content-Disposition")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{status, message})
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var op string
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		op = OpRead
	case http.MethodPost:
		op = OpWrite
	default:
		WriteError(w, http.StatusMethodNotAllowed, "use GET to download or POST to upload")
		return
	}
	if e := authorize(r, h.sess.AccessToken(), op, h.now()); e != nil {
		WriteError(w, e.status, e.message)
		return
	}
	u, err := h.sess.LookupUser(r.URL.Query().Get("username"))
	if err != nil {
		WriteError(w, http.StatusUnauthorized, err.Error())
		return
	}
	var e *httpError
	if op == OpRead {
		e = h.download(w, r, u)
	} else {
		e = h.upload(w, r, u)
	}
	if e != nil {
		WriteError(w, e.status, e.message)
	}
}

func (h *Handler) download(w http.ResponseWriter, r *http.Request, u *users.User) *httpError {
	raw := r.URL.Query().Get("path")
	if raw == "" {
		return &httpError{http.StatusBadRequest, "the path query parameter is required"}
	}
	p := u.Resolve(raw)
	f, err := os.Open(p)
	if err != nil {
		return fileError(p, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fileError(p, err)
	}
	if fi.IsDir() {
		return &httpError{http.StatusBadRequest, fmt.Sprintf("path %s is a directory; download files one by one", p)}
	}
	w.Header().Set("Vary", "Accept-Encoding")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("inline", map[string]string{"filename": fi.Name()}))
	gzipOK := acceptsGzip(r)
	if !gzipOK && refusesIdentity(r) {
		return &httpError{http.StatusNotAcceptable, "Accept-Encoding allows neither gzip nor identity; envd can send only those"}
	}
	if gzipOK && r.Header.Get("Range") == "" {
		if ct := mime.TypeByExtension(filepath.Ext(p)); ct != "" {
			w.Header().Set("Content-Type", ct)
		} else {
			w.Header().Set("Content-Type", "application/octet-stream")
		}
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Last-Modified", fi.ModTime().UTC().Format(http.TimeFormat))
		if r.Method == http.MethodHead {
			return nil
		}
		gz := gzipWriters.Get().(*gzip.Writer)
		gz.Reset(w)
		defer gzipWriters.Put(gz)
		if _, err := copyBuffered(gz, f); err != nil {
			h.log.Debug("gzip download interrupted", "path", p, "err", err)
			return nil
		}
		_ = gz.Close()
		return nil
	}
	http.ServeContent(w, r, fi.Name(), fi.ModTime(), f)
	return nil
}

var gzipWriters = sync.Pool{New: func() any { return gzip.NewWriter(io.Discard) }}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// copyBuffered copies with a pooled buffer; the wrapper hides ReadFrom so
// io.CopyBuffer really uses it instead of allocating its own.
func copyBuffered(dst io.Writer, src io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return io.CopyBuffer(struct{ io.Writer }{dst}, src, *bp)
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(name), "gzip") && strings.ReplaceAll(params, " ", "") != "q=0" {
			return true
		}
	}
	return false
}

// refusesIdentity reports an Accept-Encoding that forbids unencoded bodies
// ("identity;q=0", or "*;q=0" without an identity entry).
func refusesIdentity(r *http.Request) bool {
	star, identity := "", ""
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "identity":
			identity = strings.ReplaceAll(params, " ", "") + "+"
		case "*":
			star = strings.ReplaceAll(params, " ", "") + "+"
		}
	}
	return identity == "q=0+" || (identity == "" && star == "q=0+")
}

// fileError maps an OS error to the HTTP status envd uses.
func fileError(p string, err error) *httpError {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &httpError{http.StatusNotFound, fmt.Sprintf("path %s does not exist", p)}
	case errors.Is(err, fs.ErrPermission):
		return &httpError{http.StatusForbidden, fmt.Sprintf("permission denied on %s", p)}
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return &httpError{http.StatusInsufficientStorage, fmt.Sprintf("not enough disk space to write %s", p)}
	case errors.Is(err, syscall.EISDIR):
		return &httpError{http.StatusBadRequest, fmt.Sprintf("path %s is a directory", p)}
	case errors.Is(err, syscall.ENOTDIR):
		return &httpError{http.StatusBadRequest, fmt.Sprintf("a parent of %s is not a directory", p)}
	default:
		var ce *connect.Error
		if errors.As(err, &ce) {
			switch ce.Code {
			case connect.InvalidArgument:
				return &httpError{http.StatusBadRequest, ce.Message}
			case connect.ResourceExhausted:
				return &httpError{http.StatusInsufficientStorage, ce.Message}
			}
		}
		return &httpError{http.StatusInternalServerError, fmt.Sprintf("%s: %v", p, err)}
	}
}

// uploaded is one element of the POST /files response.
type uploaded struct {
	Path     string            `json:"path"`
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

func (h *Handler) upload(w http.ResponseWriter, r *http.Request, u *users.User) *httpError {
	md, e := metadataHeaders(r.Header)
	if e != nil {
		return e
	}
	body := io.Reader(r.Body)
	switch enc := strings.ToLower(r.Header.Get("Content-Encoding")); enc {
	case "", "identity":
	case "gzip":
		gz, err := gzip.NewReader(r.Body)
		if err != nil {
			return &httpError{http.StatusBadRequest, "body is not valid gzip: " + err.Error()}
		}
		defer gz.Close()
		body = gz
	default:
		return &httpError{http.StatusBadRequest, fmt.Sprintf("unsupported Content-Encoding %q, use gzip or none", enc)}
	}
	target := r.URL.Query().Get("path")
	ct, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var out []uploaded
	switch ct {
	case "multipart/form-data":
		mr := multipart.NewReader(body, params["boundary"])
		seen := map[string]bool{}
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				return &httpError{http.StatusBadRequest, "malformed multipart body: " + err.Error()}
			}
			if part.FormName() != "file" {
				continue
			}
			dest := target
			if dest == "" {
				// Not part.FileName(): it strips directories, and the
				// filename carries the full destination path here.
				_, dp, _ := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
				dest = dp["filename"]
			}
			if dest == "" {
				return &httpError{http.StatusBadRequest, "a file part has no filename and the path query parameter is missing"}
			}
			p := u.Resolve(dest)
			if seen[p] {
				return &httpError{http.StatusBadRequest, fmt.Sprintf("path %s is uploaded twice in one request", p)}
			}
			seen[p] = true
			up, e := writeFile(p, part, u, md)
			if e != nil {
				return e
			}
			out = append(out, up)
		}
		if len(out) == 0 {
			return &httpError{http.StatusBadRequest, "the multipart body has no part named \"file\""}
		}
	case "application/octet-stream":
		if target == "" {
			return &httpError{http.StatusBadRequest, "octet-stream uploads need the path query parameter"}
		}
		up, e := writeFile(u.Resolve(target), body, u, md)
		if e != nil {
			return e
		}
		out = append(out, up)
	default:
		return &httpError{http.StatusBadRequest, fmt.Sprintf("unsupported Content-Type %q, use multipart/form-data or application/octet-stream", ct)}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
	return nil
}

// writeFile writes src to p as u: parents are created and the file and
// new directories belong to u.
func writeFile(p string, src io.Reader, u *users.User, md map[string]string) (uploaded, *httpError) {
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		return uploaded{}, &httpError{http.StatusBadRequest, fmt.Sprintf("path %s is a directory", p)}
	}
	if err := filesystem.MkdirAll(filepath.Dir(p), u); err != nil {
		return uploaded{}, fileError(p, err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return uploaded{}, fileError(p, err)
	}
	_, err = copyBuffered(f, src)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// A half-written file is useless and, on a full disk, in the way.
		_ = os.Remove(p)
		return uploaded{}, fileError(p, err)
	}
	if err := u.Chown(p); err != nil {
		return uploaded{}, fileError(p, err)
	}
	if err := setMetadata(p, md); err != nil {
		return uploaded{}, fileError(p, err)
	}
	return uploaded{Path: p, Name: filepath.Base(p), Type: "file", Metadata: md}, nil
}

// metadataHeaders collects X-Metadata-<key> headers, validated as envd does.
func metadataHeaders(h http.Header) (map[string]string, *httpError) {
	var md map[string]string
	total := 0
	for k, vs := range h {
		const prefix = "X-Metadata-"
		if len(k) <= len(prefix) || !strings.EqualFold(k[:len(prefix)], prefix) || len(vs) == 0 {
			continue
		}
		key := strings.ToLower(k[len(prefix):])
		if len(key) > 246 || !printable(key) || !printable(vs[0]) {
			return nil, &httpError{http.StatusBadRequest, fmt.Sprintf("metadata key %q: keys are at most 246 printable ASCII bytes, values printable ASCII", key)}
		}
		total += len(key) + len(vs[0])
		if md == nil {
			md = map[string]string{}
		}
		md[key] = vs[0]
	}
	if total > 4096 {
		return nil, &httpError{http.StatusBadRequest, "metadata is larger than 4096 bytes in total"}
	}
	return md, nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// setMetadata replaces the user.e2b.* xattrs of p with md.
func setMetadata(p string, md map[string]string) error {
	for k := range filesystem.Metadata(p) {
		_ = unix.Removexattr(p, filesystem.MetadataPrefix+k)
	}
	for k, v := range md {
		if err := unix.Setxattr(p, filesystem.MetadataPrefix+k, []byte(v), 0); err != nil {
			return fmt.Errorf("set metadata %q: %w", k, err)
		}
	}
	return nil
}
