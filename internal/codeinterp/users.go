package codeinterp

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
)

// kernelUser is the user a context's kernel runs as. As in E2B, kernels
// run as the code interpreter's own user (root in a sandbox) unless a
// context asks for another one.
type kernelUser struct {
	name string
	home string
	// cred switches to the user; nil when it is the server's own user.
	cred *syscall.Credential
}

// lookupKernelUser resolves name ("" = the server's own user). Only a
// server running as root can start kernels as someone else.
func lookupKernelUser(name string) (*kernelUser, error) {
	self, err := user.Current()
	if err != nil {
		return nil, fmt.Errorf("look up the code interpreter's own user: %w", err)
	}
	if name == "" || name == self.Username || name == self.Uid {
		return &kernelUser{name: self.Username, home: self.HomeDir}, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("user %q: %w: use an existing user of the sandbox (e.g. root or user): %w", name, err, errInvalid)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("cannot run a context as %q: the code interpreter runs as %q, not root, so its contexts run as %q: %w",
			name, self.Username, self.Username, errInvalid)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user %q has a non-numeric uid %q or gid %q", name, u.Uid, u.Gid)
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				cred.Groups = append(cred.Groups, uint32(n))
			}
		}
	}
	return &kernelUser{name: u.Username, home: u.HomeDir, cred: cred}, nil
}

// env returns base with HOME, USER and LOGNAME of the kernel's user, so a
// root kernel does not write its caches into /home/user, nor a user kernel
// into /root.
func (u *kernelUser) env(base []string) []string {
	out := make([]string, 0, len(base)+3)
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if k == "HOME" || k == "USER" || k == "LOGNAME" {
			continue
		}
		out = append(out, kv)
	}
	if u.home != "" {
		out = append(out, "HOME="+u.home)
	}
	return append(out, "USER="+u.name, "LOGNAME="+u.name)
}
