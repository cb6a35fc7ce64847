package oci

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/runtime"
)

var _ runtime.Stopper = (*Driver)(nil)

// Stop kills the sandbox's init (crun and runc: envd as PID 1 of the
// sandbox's PID namespace, whose end takes every process in it; runsc:
// the sandbox process holding the sentry). It signals through a pidfd
// opened after checking the process's start time, so a PID reused since
// the handle was written is never signalled, and returns once the init
// has exited. Delete still has to run.
func (d *Driver) Stop(ctx context.Context, id string) error {
	if err := validateID(id); err != nil {
		return err
	}
	p := d.paths(id)
	h, err := readHandle(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			if _, serr := os.Stat(p.dir); serr != nil {
				return notFound(id)
			}
			return nil // checkpointed or never started: nothing runs
		}
		return err
	}
	if h.Pid <= 0 {
		return nil
	}
	fd, err := unix.PidfdOpen(h.Pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil // already ended
	}
	if err != nil {
		return fmt.Errorf("stop sandbox %s: open init %d: %w", id, h.Pid, err)
	}
	defer unix.Close(fd)
	if st, err := procStartTime(h.Pid); err != nil || st != h.StartTime {
		return nil // ended, and the PID may belong to another process now
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("stop sandbox %s: kill init %d: %w", id, h.Pid, err)
	}
	// SIGKILL is delivered, not yet done: wait until the init has exited
	// (its pidfd turns readable), so that no process of the sandbox runs
	// once the kill answers. Bounded: a caller that gets an error tears the
	// sandbox down the slow way.
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(pfd, stopWaitMillis)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return fmt.Errorf("stop sandbox %s: wait for init %d: %w", id, h.Pid, err)
		case n == 0:
			return fmt.Errorf("stop sandbox %s: init %d still runs %d ms after SIGKILL", id, h.Pid, stopWaitMillis)
		}
		return nil
	}
}

// stopWaitMillis bounds Stop's wait for a killed init to exit.
const stopWaitMillis = 2000
