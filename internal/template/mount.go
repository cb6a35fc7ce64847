package template

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

var mountMu sync.Mutex

// mountLayers mounts a read-only overlay of layers (topmost first) at dir,
// unless something is mounted there already (a server restart keeps the
// mounts). Sandboxes then use dir as their single lower layer, so the
// sandbox manager needs no knowledge of layer stacks.
func mountLayers(dir string, layers []string) error {
	if len(layers) == 1 {
		return fmt.Errorf("a single layer needs no overlay")
	}
	// Creates from a tag mount older builds on demand, possibly several at
	// once: without the lock two of them could stack two mounts on dir.
	mountMu.Lock()
	defer mountMu.Unlock()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if isMountpoint(dir) {
		return nil
	}
	for _, l := range layers {
		if strings.ContainsAny(l, ",:") {
			return fmt.Errorf("layer path %q contains ',' or ':'", l)
		}
		if _, err := os.Stat(l); err != nil {
			return fmt.Errorf("layer %s is missing: %w", l, err)
		}
	}
	// No upperdir: the overlay is read-only, which is all a lower layer needs.
	data := "lowerdir=" + strings.Join(layers, ":")
	if len(data) >= os.Getpagesize() {
		return fmt.Errorf("%d layers exceed the overlay option limit; combine RUN steps", len(layers))
	}
	if err := unix.Mount("overlay", dir, "overlay", unix.MS_RDONLY, data); err != nil {
		return fmt.Errorf("mount template layers at %s: %w", dir, err)
	}
	return nil
}

func unmount(dir string) {
	for range 4 {
		if unix.Unmount(dir, unix.MNT_DETACH) != nil {
			return
		}
	}
}

func isMountpoint(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMount(fields[4]) == dir {
			return true
		}
	}
	return false
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}
