package filesystem

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"

	"github.com/sbxdev/sbx/internal/envd/connect"
	"github.com/sbxdev/sbx/internal/envd/users"
)

// Session is what the service needs from envd's per-sandbox state.
type Session interface {
	// User is the user a request acts as; an unknown name is a
	// connect.Unauthenticated error.
	User(r *http.Request) (*users.User, error)
}

// Service serves filesystem.Filesystem.
type Service struct {
	sess     Session
	watchers *watcherTable
}

// NewService returns the service for sess.
func NewService(sess Session) *Service {
	return &Service{sess: sess, watchers: newWatcherTable()}
}

// Close stops every polling watcher.
func (s *Service) Close() { s.watchers.closeAll() }

// Register adds the service's routes to mux.
func (s *Service) Register(mux interface{ Handle(string, http.Handler) }) {
	const p = "/filesystem.Filesystem/"
	mux.Handle(p+"Stat", connect.Unary(s.stat))
	mux.Handle(p+"MakeDir", connect.Unary(s.makeDir))
	mux.Handle(p+"Move", connect.Unary(s.move))
	mux.Handle(p+"ListDir", connect.Unary(s.listDir))
	mux.Handle(p+"Remove", connect.Unary(s.remove))
	mux.Handle(p+"WatchDir", connect.ServerStream(s.watchDir))
	mux.Handle(p+"CreateWatcher", connect.Unary(s.createWatcher))
	mux.Handle(p+"GetWatcherEvents", connect.Unary(s.getWatcherEvents))
	mux.Handle(p+"RemoveWatcher", connect.Unary(s.removeWatcher))
}

type (
	pathRequest struct {
		Path string `json:"path"`
	}
	entryResponse struct {
		Entry *EntryInfo `json:"entry"`
	}
	moveRequest struct {
		Source      string `json:"source"`
		Destination string `json:"destination"`
	}
	listDirRequest struct {
		Path  string `json:"path"`
		Depth uint32 `json:"depth"`
	}
	listDirResponse struct {
		Entries []*EntryInfo `json:"entries"`
	}
	empty struct{}
)

// resolve returns the request's user and the absolute form of p.
func (s *Service) resolve(r *http.Request, p string) (*users.User, string, error) {
	u, err := s.sess.User(r)
	if err != nil {
		return nil, "", err
	}
	return u, u.Resolve(p), nil
}

func (s *Service) stat(ctx context.Context, r *http.Request, req *pathRequest) (*entryResponse, error) {
	_, p, err := s.resolve(r, req.Path)
	if err != nil {
		return nil, err
	}
	e, err := Entry(p)
	if err != nil {
		return nil, err
	}
	return &entryResponse{Entry: e}, nil
}

func (s *Service) makeDir(ctx context.Context, r *http.Request, req *pathRequest) (*entryResponse, error) {
	u, p, err := s.resolve(r, req.Path)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(p); err == nil {
		if fi.IsDir() {
			return nil, connect.Errorf(connect.AlreadyExists, "directory %s already exists", p)
		}
		return nil, connect.Errorf(connect.InvalidArgument, "%s exists and is not a directory", p)
	}
	if err := MkdirAll(p, u); err != nil {
		return nil, err
	}
	e, err := Entry(p)
	if err != nil {
		return nil, err
	}
	return &entryResponse{Entry: e}, nil
}

// MkdirAll creates dir and its missing parents, each owned by u.
func MkdirAll(dir string, u *users.User) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return connect.Errorf(connect.InvalidArgument, "%s exists and is not a directory", dir)
		}
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := MkdirAll(parent, u); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return pathError(dir, err)
	}
	if err := u.Chown(dir); err != nil {
		return connect.Errorf(connect.Internal, "%v", err)
	}
	return nil
}

func (s *Service) move(ctx context.Context, r *http.Request, req *moveRequest) (*entryResponse, error) {
	u, src, err := s.resolve(r, req.Source)
	if err != nil {
		return nil, err
	}
	dst := u.Resolve(req.Destination)
	if _, err := os.Lstat(src); err != nil {
		return nil, pathError(src, err)
	}
	if err := MkdirAll(filepath.Dir(dst), u); err != nil {
		return nil, err
	}
	if err := os.Rename(src, dst); err != nil {
		return nil, pathError(dst, err)
	}
	e, err := Entry(dst)
	if err != nil {
		return nil, err
	}
	return &entryResponse{Entry: e}, nil
}

func (s *Service) remove(ctx context.Context, r *http.Request, req *pathRequest) (*empty, error) {
	_, p, err := s.resolve(r, req.Path)
	if err != nil {
		return nil, err
	}
	// RemoveAll semantics, as E2B's envd: removing what is not there
	// succeeds, so a cleanup can be retried or run twice.
	if err := os.RemoveAll(p); err != nil {
		return nil, pathError(p, err)
	}
	return &empty{}, nil
}

func (s *Service) listDir(ctx context.Context, r *http.Request, req *listDirRequest) (*listDirResponse, error) {
	_, p, err := s.resolve(r, req.Path)
	if err != nil {
		return nil, err
	}
	depth := req.Depth
	if depth == 0 {
		depth = 1
	}
	// A symlink to a directory can be listed, like `ls dir/`.
	fi, err := os.Stat(p)
	if err != nil {
		return nil, pathError(p, err)
	}
	if !fi.IsDir() {
		return nil, connect.Errorf(connect.InvalidArgument, "%s is not a directory", p)
	}
	entries := []*EntryInfo{}
	if err := list(ctx, p, depth, &entries); err != nil {
		return nil, err
	}
	return &listDirResponse{Entries: entries}, nil
}

// list appends the entries of dir and, for depth > 1, of its
// subdirectories (symlinks are not followed, so loops cannot happen).
func list(ctx context.Context, dir string, depth uint32, out *[]*EntryInfo) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return pathError(dir, err)
	}
	for _, de := range des {
		p := filepath.Join(dir, de.Name())
		fi, err := de.Info()
		if err != nil {
			continue // removed meanwhile
		}
		*out = append(*out, entryFrom(p, fi))
		if depth > 1 && fi.IsDir() {
			if err := list(ctx, p, depth-1, out); err != nil {
				return fmt.Errorf("list %s: %w", p, err)
			}
		}
	}
	return nil
}
