package leader

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// File elects among processes on one machine with an exclusive flock on a
// file in a directory only the server writes (the data dir): the kernel
// drops the lock when its holder dies, so a successor takes over within
// one RetryPeriod.
type File struct {
	Dir    string // where NAME.lock lives
	Timing Timing
	Log    *slog.Logger
}

// Campaign runs lead each time this process holds the lock for name,
// until ctx ends.
func (f *File) Campaign(ctx context.Context, name string, lead Lead) error {
	if err := checkName(name); err != nil {
		return err
	}
	t := f.Timing.orDefault()
	path := filepath.Join(f.Dir, name+".lock")
	for {
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return fmt.Errorf("leader %s: open %s: %w", name, path, err)
		}
		err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			logf(f.Log, "leading", name)
			lead(ctx) // a flock cannot be lost while its holder lives
			unix.Close(fd)
			logf(f.Log, "stopped leading", name)
		} else {
			unix.Close(fd)
			if err != unix.EWOULDBLOCK {
				return fmt.Errorf("leader %s: lock %s: %w", name, path, err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(t.RetryPeriod):
		}
	}
}

func logf(log *slog.Logger, msg, name string) {
	if log != nil {
		log.Info(msg, "leader.name", name, "pid", os.Getpid())
	}
}

// checkName keeps names usable as file names, lease names and lock keys.
func checkName(name string) error {
	if name == "" || len(name) > 63 {
		return fmt.Errorf("leader name %q: want 1 to 63 characters", name)
	}
	for _, c := range name {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return fmt.Errorf("leader name %q: use lowercase letters, digits and '-'", name)
		}
	}
	return nil
}
