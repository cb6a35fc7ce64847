package oci

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"

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

// Foreground gives the sandbox's cgroup the default CPU weight.
func (d *Driver) Foreground(ctx context.Context, id string) error {
	if err := validateID(id); err != nil {
		return err
	}
	file, val := filepath.Join(d.cgroupDir("cpu", id), "cpu.shares"), normalShares
	if d.cg.unified {
		file, val = filepath.Join(d.cgroupDir("", id), "cpu.weight"), normalWeight
	}
	err := os.WriteFile(file, []byte(strconv.Itoa(val)), 0)
	if errors.Is(err, os.ErrNotExist) {
		return notFound(id)
	}
	return err
}
