package hostfs

import (
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Watch wakes its waiter when an entry appears in a Dir (inotify), so a
// caller waiting for a file another process creates learns of it at once
// instead of at its next poll.
type Watch struct {
	f *os.File // non-blocking: waits go through the runtime's poller
}

// Watch starts watching d for entries created or moved into it. The watch
// is set through d's descriptor, never by name.
func (d *Dir) Watch() (*Watch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	if _, err := unix.InotifyAddWatch(fd, "/proc/self/fd/"+strconv.Itoa(d.fd), unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_ONLYDIR); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &Watch{f: os.NewFile(uintptr(fd), "inotify "+d.Path())}, nil
}

// Wait returns once an entry appeared since the last Wait, or after
// timeout, whichever is first; it reports whether one appeared.
func (w *Watch) Wait(timeout time.Duration) bool {
	if err := w.f.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		time.Sleep(timeout) // not pollable: wait as a poll would
		return false
	}
	// One read takes every queued event: the next Wait waits for new ones.
	var buf [4096]byte
	n, err := w.f.Read(buf[:])
	return err == nil && n > 0
}

// Close stops the watch.
func (w *Watch) Close() error { return w.f.Close() }
