package oci

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/runtime"
)

var _ runtime.Prioritizer = (*Driver)(nil)

// The CPU weights of a sandbox's cgroup (cgroup v1 cpu.shares; crun maps
// shares to cgroup v2's cpu.weight): a sandbox started in the background
// (Resources.Background) gets the least, so that among the sandboxes
// wanting the CPU at once the ones a user waits for (a claimed pooled
// sandbox running its first command) win it. Only sandboxes compete at this
// level: the sandboxes' parent cgroup keeps its own weight against the rest
// of the host.
const (
	backgroundShares = 2
	normalShares     = 1024 // the kernel's default
	normalWeight     = 100  // cgroup v2's default
)

// Foreground gives the sandbox's cgroup the default CPU weight and its
// processes normal priority: they inherit the nice value of whoever
// started the runtime (a warm pool starts below normal priority), and root
// in a sandbox cannot raise it back.
func (d *Driver) Foreground(ctx context.Context, id string) error {
	if err := validateID(id); err != nil {
		return err
	}
	dir, file, val, tasks := d.cgroupDir("cpu", id), "cpu.shares", normalShares, "tasks"
	if d.cg.unified {
		dir, file, val, tasks = d.cgroupDir("", id), "cpu.weight", normalWeight, "cgroup.threads"
	}
	err := os.WriteFile(filepath.Join(dir, file), []byte(strconv.Itoa(val)), 0)
	if errors.Is(err, os.ErrNotExist) {
		return notFound(id)
	}
	if err != nil {
		return err
	}
	// Twice: a thread created while the first pass ran inherits the old
	// priority of the one that made it.
	for range 2 {
		b, err := os.ReadFile(filepath.Join(dir, tasks))
		if err != nil {
			return err
		}
		changed := false
		for _, f := range bytes.Fields(b) {
			tid, err := strconv.Atoi(string(f))
			if err != nil {
				continue
			}
			// The raw syscall returns 20 - nice.
			if prio, err := unix.Getpriority(unix.PRIO_PROCESS, tid); err == nil && prio != 20 {
				_ = unix.Setpriority(unix.PRIO_PROCESS, tid, 0)
				changed = true
			}
		}
		if !changed {
			break
		}
	}
	return nil
}
