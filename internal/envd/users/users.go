// Package users resolves the Linux users that envd runs processes and
// writes files as.
package users

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// User is a resolved Linux account.
type User struct {
	Name   string
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups, including GID
	Home   string
}

// ErrUnknown is returned for a name that has no account.
var ErrUnknown = errors.New("invalid username")

// Lookup resolves name through the passwd and group databases. Answers
// are remembered while both files stay as they were: every command and
// file operation resolves its user, and reading and parsing both files
// cost more than the command's own start-up work in envd.
func Lookup(name string) (*User, error) {
	st, ok := stampNow()
	if ok {
		cache.mu.Lock()
		u, hit := cache.users[name]
		hit = hit && cache.stamp == st
		cache.mu.Unlock()
		if hit {
			return &u, nil
		}
	}
	// Stamped before reading: a change in between is seen at the next call.
	u, err := lookupUncached(name)
	if err == nil && ok {
		cache.mu.Lock()
		if cache.stamp != st || cache.users == nil {
			cache.stamp, cache.users = st, map[string]User{}
		}
		cache.users[name] = *u
		cache.mu.Unlock()
	}
	return u, err
}

// stampFiles are the databases whose change drops the cache (os/user's).
var stampFiles = [2]string{"/etc/passwd", "/etc/group"}

// fileStamp tells a file apart from its earlier versions: a new file
// (useradd renames one into place) changes the inode, an edit in place
// the size or the change time, which no one can set back.
type fileStamp struct {
	ino, size    int64
	mtime, ctime syscall.Timespec
}

var cache struct {
	mu    sync.Mutex
	stamp [2]fileStamp
	users map[string]User
}

// stampNow stats both databases; ok is false if either is missing.
func stampNow() (st [2]fileStamp, ok bool) {
	for i, p := range stampFiles {
		var s syscall.Stat_t
		if syscall.Stat(p, &s) != nil {
			return st, false
		}
		st[i] = fileStamp{ino: int64(s.Ino), size: s.Size, mtime: s.Mtim, ctime: s.Ctim}
	}
	return st, true
}

var lookupUncached = lookup

func lookup(name string) (*User, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if name == "root" {
			// A minimal root filesystem may lack /etc/passwd; root still exists.
			return &User{Name: "root", Home: "/root", Groups: []uint32{0}}, nil
		}
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return nil, fmt.Errorf("%w: %q", ErrUnknown, name)
		}
		return nil, fmt.Errorf("look up user %q: %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q has a non-numeric uid %q", name, u.Uid)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q has a non-numeric gid %q", name, u.Gid)
	}
	res := &User{Name: u.Username, UID: uint32(uid), GID: uint32(gid), Home: u.HomeDir}
	if res.Home == "" {
		res.Home = "/"
	}
	// A user without supplementary groups still has its primary group; a
	// broken group database should not stop the process from starting.
	ids, _ := u.GroupIds()
	res.Groups = append(res.Groups, res.GID)
	for _, s := range ids {
		g, err := strconv.ParseUint(s, 10, 32)
		if err == nil && uint32(g) != res.GID {
			res.Groups = append(res.Groups, uint32(g))
		}
	}
	return res, nil
}

// Credential is what a child process needs to run as u, or nil when envd
// already runs as u (a non-root envd in tests cannot call setgroups).
func (u *User) Credential() *syscall.Credential {
	if uint32(os.Geteuid()) == u.UID && uint32(os.Getegid()) == u.GID {
		return nil
	}
	return &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups}
}

// Chown gives path to u; it is a no-op when envd is not root, because then
// every file it creates already belongs to envd's own user.
func (u *User) Chown(path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	// Skipping a no-op chown spares directory watchers a CHMOD event.
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err == nil && st.Uid == u.UID && st.Gid == u.GID {
		return nil
	}
	if err := os.Lchown(path, int(u.UID), int(u.GID)); err != nil {
		return fmt.Errorf("chown %s to %s: %w", path, u.Name, err)
	}
	return nil
}

// Resolve makes p absolute: "~" and "~/x" expand to the home, relative
// paths are taken from the home.
func (u *User) Resolve(p string) string {
	switch {
	case p == "~":
		return u.Home
	case strings.HasPrefix(p, "~/"):
		p = u.Home + p[1:]
	case !strings.HasPrefix(p, "/"):
		p = u.Home + "/" + p
	}
	return cleanPath(p)
}

func cleanPath(p string) string {
	// path.Clean without importing path twice in callers.
	out := make([]string, 0, 8)
	for _, part := range strings.Split(p, "/") {
		switch part {
		case "", ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, part)
		}
	}
	return "/" + strings.Join(out, "/")
}

// FromBasicAuth extracts the user name from an
// "Authorization: Basic base64(user:)" header; ok is false when the header
// is absent.
func FromBasicAuth(header string) (name string, ok bool, err error) {
	if header == "" {
		return "", false, nil
	}
	const prefix = "Basic "
	if len(header) < len(prefix) || !strings.EqualFold(header[:len(prefix)], prefix) {
		return "", false, fmt.Errorf("authorization header must be Basic base64(\"<user>:\")")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(header[len(prefix):]))
	if err != nil {
		return "", false, fmt.Errorf("authorization header is not valid base64: %w", err)
	}
	name, _, _ = strings.Cut(string(raw), ":")
	if name == "" {
		return "", false, nil
	}
	return name, true, nil
}
