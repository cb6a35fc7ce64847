package oci

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

const cgroupRoot = "/sys/fs/cgroup"

// cgroupLayout says where the sandbox cgroups live on this host.
type cgroupLayout struct {
	unified bool // pure cgroup v2 at /sys/fs/cgroup
	memsw   bool // v1 memory.memsw.* exists (swap accounting enabled)
}

// PrepareHost fixes the host state the OCI runtimes depend on and reports, in
// one error, everything that is missing. It is idempotent and cheap; New
// calls it.
//
// The fix: on a cgroup v1 "hybrid" host, cgroup2 (mounted at
// /sys/fs/cgroup/unified) owns the hugetlb controller, and crun 1.8 refuses
// to start anything ("cgroups in hybrid mode not supported"). Mounting
// hugetlb as a v1 hierarchy moves the controller back to v1.
func PrepareHost(log *slog.Logger) error {
	var problems []string
	if os.Geteuid() != 0 {
		problems = append(problems, "sbx must run as root to create sandboxes (run it with sudo or as a root service)")
	}
	if !hasFilesystem("overlay") {
		problems = append(problems, "the kernel has no overlay filesystem (load the overlay module or use a kernel with CONFIG_OVERLAY_FS)")
	}
	layout, err := detectCgroups()
	if err != nil {
		problems = append(problems, err.Error())
	}
	if err == nil && !layout.unified && os.Geteuid() == 0 {
		if err := mountHugetlbV1(log); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if err == nil && os.Geteuid() == 0 {
		favorDynmods(log, layout)
	}
	if len(problems) > 0 {
		return fmt.Errorf("host is not ready for sandboxes:\n  - %s", strings.Join(problems, "\n  - "))
	}
	return nil
}

// favorDynmods turns on cgroup2's favordynmods option (Linux 6.0 and
// later), unless it is on already. Without it, every process moved into
// a cgroup (the runtime moving each sandbox's init into its cgroups)
// takes the kernel's global threadgroup lock for writing, which waits for
// an RCU grace period whenever the lock was idle: 7.7 ms (p50, up to 20)
// of wall time per sandbox start on this project's machines, against
// 0.25 ms with the option on. The price is a little more work in fork and
// exit. The lock is global, so the option of the cgroup2 hierarchy (the
// empty one at unified/ on a hybrid host) speeds up cgroup v1 moves as
// well. The kernel cannot turn the faster locking off again once on
// (until reboot), which is why it is checked before it is set. A failure
// costs only speed: it is logged, not returned.
func favorDynmods(log *slog.Logger, layout cgroupLayout) {
	if !strings.Contains(readString("/sys/kernel/cgroup/features"), "favordynmods") {
		return // before Linux 6.0
	}
	dir := cgroupRoot
	if !layout.unified {
		dir = cgroupRoot + "/unified"
	}
	opts, ok := cgroup2Options(readString("/proc/self/mountinfo"), dir)
	if !ok || slices.Contains(opts, "favordynmods") {
		return // no cgroup2 hierarchy (pure v1), or on already
	}
	if err := reconfigureCgroup2(dir, append(opts, "favordynmods")); err != nil {
		log.Warn("cannot turn on cgroup favordynmods: each sandbox start waits for the kernel's cgroup lock (milliseconds)",
			"path", dir, "err", err)
		return
	}
	log.Info("turned on cgroup favordynmods: moving a sandbox into its cgroups no longer waits for an RCU grace period", "path", dir)
}

// cgroup2Options returns the options of the cgroup2 hierarchy mounted
// at dir, from mountinfo's super options, without rw/ro and labels; ok is
// false when no cgroup2 is mounted there. A reconfigure turns off every
// option it is not given, so they are all passed back: one the kernel
// would not take back makes the reconfigure fail, and change nothing.
func cgroup2Options(mountinfo, dir string) (opts []string, ok bool) {
	for _, line := range strings.Split(mountinfo, "\n") {
		pre, post, found := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !found || len(f) < 5 || f[4] != dir || len(g) < 3 || g[0] != "cgroup2" {
			continue
		}
		opts, ok = nil, true // the last mount at dir is the visible one
		for _, o := range strings.Split(g[2], ",") {
			if o != "rw" && o != "ro" && o != "seclabel" && o != "" {
				opts = append(opts, o)
			}
		}
	}
	return opts, ok
}

// reconfigureCgroup2 sets the cgroup2 hierarchy's options to exactly these
// (fspick changes the superblock's options only, not the mount's own).
func reconfigureCgroup2(dir string, flags []string) error {
	fd, err := unix.Fspick(unix.AT_FDCWD, dir, unix.FSPICK_CLOEXEC|unix.FSPICK_NO_AUTOMOUNT)
	if err != nil {
		return fmt.Errorf("fspick %s: %w", dir, err)
	}
	defer unix.Close(fd)
	for _, f := range flags {
		if err := unix.FsconfigSetFlag(fd, f); err != nil {
			return fmt.Errorf("set %s on %s: %w", f, dir, err)
		}
	}
	if err := unix.FsconfigReconfigure(fd); err != nil {
		return fmt.Errorf("reconfigure %s: %w", dir, err)
	}
	return nil
}

// nofileLimit returns the RLIMIT_NOFILE sandboxes get: 1048576, or less if
// this process cannot raise its own hard limit that far. crun applies the
// config's rlimits after dropping CAP_SYS_RESOURCE, so it cannot go above
// the hard limit it inherits from us (and some hosts, like containers
// without CAP_SYS_RESOURCE, do not let us raise it).
func nofileLimit(log *slog.Logger) uint64 {
	var cur unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &cur); err != nil {
		return 1024
	}
	if cur.Max < maxNofile {
		want := unix.Rlimit{Cur: maxNofile, Max: maxNofile}
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &want); err != nil {
			log.Warn("cannot raise RLIMIT_NOFILE; sandboxes get the lower limit",
				"limit", cur.Max, "wanted", maxNofile, "err", err)
			return cur.Max
		}
		return maxNofile
	}
	return maxNofile
}

func hasFilesystem(name string) bool {
	data, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] == name {
			return true
		}
	}
	return false
}

func detectCgroups() (cgroupLayout, error) {
	if _, err := os.Stat(cgroupRoot + "/cgroup.controllers"); err == nil {
		return cgroupLayout{unified: true}, nil
	}
	var missing []string
	for _, ctl := range []string{"memory", "pids", "cpu", "cpuacct", "freezer"} {
		if _, err := os.Stat(cgroupRoot + "/" + ctl); err != nil {
			missing = append(missing, ctl)
		}
	}
	if len(missing) > 0 {
		return cgroupLayout{}, fmt.Errorf("cgroup v1 controllers %s are not mounted under %s (mount them or boot with cgroup v2)",
			strings.Join(missing, ", "), cgroupRoot)
	}
	_, err := os.Stat(cgroupRoot + "/memory/memory.memsw.limit_in_bytes")
	return cgroupLayout{memsw: err == nil}, nil
}

func mountHugetlbV1(log *slog.Logger) error {
	dir := cgroupRoot + "/hugetlb"
	if isMountpoint(dir) {
		return nil
	}
	if !strings.Contains(readString(cgroupRoot+"/unified/cgroup.controllers"), "hugetlb") {
		return nil // nothing on cgroup2 to move back
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s for the hugetlb cgroup: %w", dir, err)
	}
	if err := unix.Mount("cgroup", dir, "cgroup", 0, "hugetlb"); err != nil {
		return fmt.Errorf("mount hugetlb as cgroup v1 at %s (crun refuses hybrid cgroups without it): %w", dir, err)
	}
	log.Info("mounted hugetlb cgroup v1 so crun accepts this hybrid cgroup host", "path", dir)
	return nil
}

// isMountpoint reports whether p is the root of a mount. statx says so
// directly (bind mounts of the same filesystem included, which a device
// comparison with the parent misses: the idmapped layer mounts); kernels
// before 5.8 fall back to that comparison.
func isMountpoint(p string) bool {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &stx); err != nil {
		return false
	}
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		return stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0
	}
	var st, parent unix.Stat_t
	if unix.Lstat(p, &st) != nil || unix.Lstat(p+"/..", &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}

// readString reads a kernel file (cgroup, /proc, /sys) with plain system
// calls; "" if it cannot. The metrics sampler reads six per sandbox every
// few seconds (a thousand sandboxes: six thousand files a tick), and
// os.ReadFile's stats and poller registration more than doubled the
// system calls of each.
func readString(p string) string {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	var buf [4096]byte
	var out []byte
	for {
		n, err := unix.Read(fd, buf[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return string(out)
		}
		out = append(out, buf[:n]...)
	}
}

// hostsFile is the sandbox's /etc/hosts.
func hostsFile(hostname string) []byte {
	return []byte("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t" +
		hostname + "\n")
}
