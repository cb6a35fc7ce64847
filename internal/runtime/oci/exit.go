package oci

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
)

var (
	_ runtime.ExitWatcher = (*Driver)(nil)
	_ runtime.IDMapper    = (*Driver)(nil)
)

// Wait watches the init process recorded in the sandbox's handle through a
// pidfd, which the Go runtime's poller waits on (no thread per sandbox).
// The init is not our child (the OCI runtime started it and exited), so
// its exit status comes from PIDFD_GET_INFO (Linux 6.15 and later keep it
// for every pidfd holder); older kernels report Code -1. Under runsc the
// handle's process is the sandbox (the sentry), which exits with the
// container's init.
func (d *Driver) Wait(ctx context.Context, id string) (runtime.Exit, error) {
	if err := validateID(id); err != nil {
		return runtime.Exit{}, err
	}
	p := d.paths(id)
	if d.checkpointed(p) {
		return runtime.Exit{}, errdefs.Precondition("sandbox %s is checkpointed: no init process runs", id)
	}
	h, err := readHandle(p)
	if err != nil {
		if _, serr := os.Stat(p.dir); serr != nil {
			return runtime.Exit{}, notFound(id)
		}
		return runtime.Exit{}, errdefs.Precondition("sandbox %s has no init process (not started, or stopped by a checkpoint)", id)
	}
	if h.Pid <= 0 {
		return runtime.Exit{}, errdefs.Precondition("sandbox %s has no init process yet", id)
	}
	code, err := waitPid(ctx, h.Pid, h.StartTime)
	if err != nil {
		return runtime.Exit{}, err
	}
	ex := runtime.Exit{Reason: runtime.ExitExited, Code: code}
	if d.oomKills(id) > 0 {
		ex.Reason = runtime.ExitOOM
	}
	return ex, nil
}

// waitPid waits for pid, if it is still the process started at startTime
// (clock ticks since boot), to end, and returns its exit status (-1 when
// unknown).
func waitPid(ctx context.Context, pid int, startTime uint64) (int, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.ESRCH) {
		return -1, nil // gone and reaped
	}
	if err != nil {
		return 0, fmt.Errorf("watch init process %d: %w", pid, err)
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	// The pidfd pins pid: if it is our init now, it stays ours.
	if st, err := procStartTime(pid); err != nil || st != startTime {
		return exitCode(fd, pid), nil // ended (a zombie, or reaped and reused)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Now()) })
	defer stop()
	// A pidfd turns readable when its process ends.
	err = rc.Read(func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, _ := unix.Poll(fds, 0)
		return n > 0
	})
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("watch init process %d: %w", pid, err)
	}
	return exitCode(fd, pid), nil
}

// exitCode returns an ended process's exit status, as a shell reports it,
// or -1. Until its parent reaps it, /proc/<pid>/stat of the zombie has it
// (the pidfd pins pid, so it is still our process); once reaped, the kernel
// keeps it for pidfd holders (PIDFD_INFO_EXIT, Linux 6.15 and later). The
// parent (the host's init, or a subreaper) reaps at once, so the short
// retry only covers that hand-over.
func exitCode(pidfd, pid int) int {
	for range 50 {
		info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_EXIT}
		if err := unix.IoctlPidfdInfo(pidfd, &info); err == nil && info.Mask&unix.PIDFD_INFO_EXIT != 0 {
			return shellStatus(unix.WaitStatus(info.Exit_code))
		}
		if ws, ok := zombieStatus(pid); ok {
			return shellStatus(ws)
		}
		time.Sleep(time.Millisecond)
	}
	return -1
}

func shellStatus(ws unix.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return -1
}

// zombieStatus reads field 52 (exit_code) of /proc/<pid>/stat when pid is
// a zombie.
func zombieStatus(pid int) (unix.WaitStatus, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	// Fields restart at 3 (state) after the command name.
	if len(f) < 50 || f[0] != "Z" {
		return 0, false
	}
	code, err := strconv.Atoi(f[49])
	if err != nil {
		return 0, false
	}
	return unix.WaitStatus(code), true
}

// oomKills is how many processes the OOM killer killed in the sandbox's
// memory cgroup (0 when unknown). The runtime keeps the cgroup until the
// sandbox is deleted, so the counter is still there after the init died.
func (d *Driver) oomKills(id string) uint64 {
	if d.cg.unified {
		return statField(readString(filepath.Join(d.cgroupDir("", id), "memory.events")), "oom_kill")
	}
	return statField(readString(filepath.Join(d.cgroupDir("memory", id), "memory.oom_control")), "oom_kill")
}

// IDMap returns the sandbox's user namespace range from its handle.
func (d *Driver) IDMap(ctx context.Context, id string) (runtime.IDMap, bool, error) {
	if err := validateID(id); err != nil {
		return runtime.IDMap{}, false, err
	}
	p := d.paths(id)
	h, err := readHandle(p)
	if err != nil {
		if _, serr := os.Stat(p.dir); serr != nil {
			return runtime.IDMap{}, false, notFound(id)
		}
		if errors.Is(err, os.ErrNotExist) {
			return runtime.IDMap{}, false, nil
		}
		return runtime.IDMap{}, false, err
	}
	if h.IDs == nil {
		return runtime.IDMap{}, false, nil
	}
	return runtime.IDMap{UID: h.IDs.UID, GID: h.IDs.GID, Size: h.IDs.Size}, true, nil
}
