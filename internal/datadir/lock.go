package datadir

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// ServeLock is the file a running server holds locked: a data dir belongs
// to one server at a time.
func (l Layout) ServeLock() string { return l.path("serve.lock") }

// Lock is a data dir held by one running `sbx serve`.
type Lock struct{ f *os.File }

// LockServer takes the data dir at root for one server, described by
// holder (its pid and listen address, shown to a second server that is
// refused), until Release or the process's death.
//
// Everything a server keeps of its sandboxes lives in its data dir: the
// runtime's state root, the sandboxes' directories, their network
// namespaces and the nftables table named after that directory. Two
// servers on one data dir would each take the other's sandboxes for
// orphans of their own at start-up and remove them, and fight over the
// firewall. Servers share a database (--database postgres://...), never a
// data dir.
//
// The lock is flock(2) on a file opened close-on-exec: the kernel drops it
// when the holder dies, even by SIGKILL, and no child process (crun, a
// sandbox) inherits it, so a restart after a crash is never refused.
func LockServer(root, holder string) (*Lock, error) {
	if err := os.MkdirAll(root, RootMode); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", root, err)
	}
	p := Layout{Root: root}.ServeLock()
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, SecretFile)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b := make([]byte, 512)
		n, _ := f.ReadAt(b, 0)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			other := strings.TrimSpace(string(b[:n]))
			if other == "" {
				other = "starting"
			}
			return nil, errdefs.Precondition("data dir %s is in use by another sbx server (%s); "+
				"give each server on this machine its own --data-dir (servers share a database with --database, never a data dir)",
				root, other)
		}
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(holder+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

// Release gives the data dir up.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	_ = l.f.Truncate(0)
	return l.f.Close() // closing the last descriptor releases the flock
}
