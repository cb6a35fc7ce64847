package oci

import (
	"slices"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/runtime/runtimetest"
)

func TestCgroup2Options(t *testing.T) {
	t.Parallel()
	const hybrid = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	const systemd = `30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`
	const on = `30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,seclabel,nsdelegate,favordynmods
`
	for _, tc := range []struct {
		name, mountinfo, dir string
		want                 []string
		ok                   bool
	}{
		{"hybrid unified", hybrid, "/sys/fs/cgroup/unified", nil, true},
		{"v1 hierarchy is not cgroup2", hybrid, "/sys/fs/cgroup/pids", nil, false},
		{"tmpfs is not cgroup2", hybrid, "/sys/fs/cgroup", nil, false},
		{"systemd's v2", systemd, "/sys/fs/cgroup", []string{"nsdelegate", "memory_recursiveprot"}, true},
		{"on already", on, "/sys/fs/cgroup", []string{"nsdelegate", "favordynmods"}, true},
		{"not mounted", "", "/sys/fs/cgroup", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok := cgroup2Options(tc.mountinfo, tc.dir)
			if ok != tc.ok || !slices.Equal(got, tc.want) {
				t.Fatalf("cgroup2Options(%s) = %q, %v; want %q, %v", tc.dir, got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestPrepareHostFavorsDynmods: after PrepareHost, the cgroup2 hierarchy
// has favordynmods on (where the kernel knows it and there is one), and a
// second call leaves the hierarchy's other options as they were.
func TestPrepareHostFavorsDynmods(t *testing.T) {
	runtimetest.RequireRoot(t)
	if !strings.Contains(readString("/sys/kernel/cgroup/features"), "favordynmods") {
		t.Skip("kernel before 6.0: no favordynmods")
	}
	layout, err := detectCgroups()
	if err != nil {
		runtimetest.Skip(t, err.Error())
	}
	dir := cgroupRoot
	if !layout.unified {
		dir = cgroupRoot + "/unified"
	}
	before, ok := cgroup2Options(readString("/proc/self/mountinfo"), dir)
	if !ok {
		t.Skipf("no cgroup2 hierarchy at %s", dir)
	}
	for range 2 {
		if err := PrepareHost(testLogger(t)); err != nil {
			t.Fatal(err)
		}
	}
	after, _ := cgroup2Options(readString("/proc/self/mountinfo"), dir)
	if !slices.Contains(after, "favordynmods") {
		t.Fatalf("%s options after PrepareHost: %q, want favordynmods among them", dir, after)
	}
	for _, o := range before {
		if !slices.Contains(after, o) {
			t.Errorf("PrepareHost dropped option %s of %s: %q -> %q", o, dir, before, after)
		}
	}
}
