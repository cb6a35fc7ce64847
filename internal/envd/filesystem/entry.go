// Package filesystem implements E2B's filesystem.Filesystem Connect
// service: stat, list, make, move and remove paths, and watch directories.
package filesystem

import (
	"errors"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/envd/connect"
)

// FileType is the proto enum FileType, sent by name.
type FileType string

// File types of EntryInfo.
const (
	TypeUnspecified FileType = "FILE_TYPE_UNSPECIFIED"
	TypeFile        FileType = "FILE_TYPE_FILE"
	TypeDirectory   FileType = "FILE_TYPE_DIRECTORY"
	TypeSymlink     FileType = "FILE_TYPE_SYMLINK"
)

// EntryInfo describes one filesystem entry. Size is int64, which ProtoJSON
// writes as a string.
type EntryInfo struct {
	Name          string            `json:"name"`
	Type          FileType          `json:"type"`
	Path          string            `json:"path"`
	Size          int64             `json:"size,omitempty,string"`
	Mode          uint32            `json:"mode,omitempty"`
	Permissions   string            `json:"permissions,omitempty"`
	Owner         string            `json:"owner,omitempty"`
	Group         string            `json:"group,omitempty"`
	ModifiedTime  string            `json:"modifiedTime,omitempty"`
	SymlinkTarget *string           `json:"symlinkTarget,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
}

// MetadataPrefix is the xattr namespace of user file metadata.
const MetadataPrefix = "user.e2b."

// Entry stats path (without following a final symlink) into an EntryInfo.
func Entry(path string) (*EntryInfo, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, pathError(path, err)
	}
	return entryFrom(path, fi), nil
}

func entryFrom(path string, fi fs.FileInfo) *EntryInfo {
	e := &EntryInfo{
		Name:         fi.Name(),
		Path:         path,
		Size:         fi.Size(),
		Mode:         uint32(fi.Mode().Perm()),
		Permissions:  fi.Mode().String(),
		ModifiedTime: fi.ModTime().UTC().Format(time.RFC3339Nano),
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		e.Type = TypeSymlink
		target, err := filepath.EvalSymlinks(path)
		if err != nil {
			target, _ = os.Readlink(path)
		}
		e.SymlinkTarget = &target
	case fi.IsDir():
		e.Type = TypeDirectory
	case fi.Mode().IsRegular():
		e.Type = TypeFile
	default:
		e.Type = TypeUnspecified
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.Owner = names.user(st.Uid)
		e.Group = names.group(st.Gid)
	}
	e.Metadata = Metadata(path)
	return e
}

// Metadata reads the user.e2b.* xattrs of path (prefix stripped).
func Metadata(path string) map[string]string {
	sz, err := unix.Llistxattr(path, nil)
	if err != nil || sz <= 0 {
		return nil
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(path, buf)
	if err != nil {
		return nil
	}
	var md map[string]string
	for _, name := range strings.Split(string(buf[:sz]), "\x00") {
		if !strings.HasPrefix(name, MetadataPrefix) {
			continue
		}
		val := make([]byte, 4096)
		n, err := unix.Lgetxattr(path, name, val)
		if err != nil {
			continue
		}
		if md == nil {
			md = make(map[string]string)
		}
		md[strings.TrimPrefix(name, MetadataPrefix)] = string(val[:n])
	}
	return md
}

// pathError turns an OS error about path into a Connect error.
func pathError(path string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return connect.Errorf(connect.NotFound, "path %s does not exist", path)
	case errors.Is(err, fs.ErrPermission):
		return connect.Errorf(connect.PermissionDenied, "permission denied on %s", path)
	case errors.Is(err, syscall.ENOTDIR):
		return connect.Errorf(connect.InvalidArgument, "a component of %s is not a directory", path)
	case errors.Is(err, syscall.ELOOP):
		return connect.Errorf(connect.FailedPrecondition, "too many levels of symbolic links at %s", path)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return connect.Errorf(connect.ResourceExhausted, "no space left for %s", path)
	default:
		return connect.Errorf(connect.Internal, "%s: %v", path, err)
	}
}

// nameCache maps uids and gids to names; the passwd file rarely changes
// and ListDir of a big tree would otherwise parse it once per entry.
type nameCache struct {
	mu     sync.Mutex
	users  map[uint32]string
	groups map[uint32]string
}

var names = &nameCache{users: map[uint32]string{}, groups: map[uint32]string{}}

func (c *nameCache) user(id uint32) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.users[id]; ok {
		return n
	}
	n := strconv.FormatUint(uint64(id), 10)
	if u, err := user.LookupId(n); err == nil {
		// Only hits are cached: an account may be added later.
		c.users[id] = u.Username
		return u.Username
	}
	return n
}

func (c *nameCache) group(id uint32) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.groups[id]; ok {
		return n
	}
	n := strconv.FormatUint(uint64(id), 10)
	if g, err := user.LookupGroupId(n); err == nil {
		c.groups[id] = g.Name
		return g.Name
	}
	return n
}
