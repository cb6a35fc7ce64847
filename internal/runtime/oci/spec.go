package oci

import (
	"path"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sbxdev/sbx/internal/runtime"
)

// defaultCaps is what root in a sandbox holds: what sudo, apt, dpkg, pip,
// npm, git and friends need, and nothing that reaches past the sandbox.
//
//   - CHOWN, DAC_OVERRIDE, FOWNER, FSETID: root manages files of any user
//     (apt and dpkg unpack as root, then chown; cp -a; tar -p).
//   - SETUID, SETGID: sudo, su, runuser, apt's _apt sandbox user.
//   - KILL: root signals processes of other users (sudo kill, supervisors).
//   - NET_BIND_SERVICE: servers on ports below 1024 (under a user namespace
//     the netns sysctl ip_unprivileged_port_start=0 does this instead).
//   - SYS_CHROOT: chroot(1), debootstrap, some build systems.
//   - SETPCAP: lets programs drop capabilities (capsh, setpriv, systemd
//     units); it cannot add any beyond this set.
//   - AUDIT_WRITE: sudo, su and login write audit records (kept as Docker
//     does; under a user namespace the kernel refuses those records anyway).
//
// Dropped from Docker's default set:
//   - NET_RAW: raw and packet sockets forge any frame on the bridge (ARP
//     spoofing of other sandboxes, issue 12). ping uses ICMP datagram
//     sockets instead (net.ipv4.ping_group_range, set in every sandbox's
//     network namespace); the built-in templates ship ping without its
//     cap_net_raw file capability, which the kernel would refuse to exec
//     without NET_RAW in the bounding set.
//   - MKNOD: the device cgroup allows only the nodes the runtime creates,
//     and under a user namespace the kernel refuses device nodes anyway.
//   - SETFCAP: file capabilities only matter for capabilities this set
//     lacks, and a binary given one (e.g. by a package's postinst, which
//     falls back to set-user-ID root when setcap fails) would then fail to
//     run at all.
var defaultCaps = []string{
	"CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID",
	"CAP_SYS_CHROOT",
}

// maskedPaths and readonlyPaths follow Docker's defaults: host information
// leaks and kernel knobs that a container must not touch.
var maskedPaths = []string{
	"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
	"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
	"/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
}

var readonlyPaths = []string{
	"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
}

// specVersion is what we claim in config.json: crun 1.8 rejects versions
// newer than it knows (the runtime-spec module is 1.3), and we use no field
// added after 1.0.2.
const specVersion = "1.0.2"

const (
	cpuPeriod    = 100000  // µs, the kernel default
	maxNofile    = 1048576 // RLIMIT_NOFILE when the host allows it
	defaultPath  = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	shmSizeBytes = "size=67108864"
)

// hostLimits are the host facts that shape a config.json.
type hostLimits struct {
	memsw  bool   // memory+swap limit available (cgroup v1 swap accounting)
	nofile uint64 // RLIMIT_NOFILE for the init process
	// seccomp is the rendered profile (seccomp.go), the same for every
	// sandbox of a driver.
	seccomp *specs.LinuxSeccomp
}

// bundlePaths are the host files a sandbox's config.json points at.
type bundlePaths struct {
	rootfs     string // overlay mountpoint
	resolvConf string // generated /etc/resolv.conf, "" to keep the template's
	hosts      string // generated /etc/hosts
	sysfs      string // a sysfs of the sandbox's network namespace to bind at /sys, "" to mount one
}

// buildSpec turns a runtime.Spec into an OCI config. ids, when set, puts
// the sandbox in a user namespace mapping its ids 0..Size-1 to that host
// range. It has no side effects, so it is tested against golden
// expectations without root.
func buildSpec(s runtime.Spec, p bundlePaths, h hostLimits, ids *idRange) *specs.Spec {
	hostname := s.Hostname
	if hostname == "" {
		hostname = s.ID
	}
	cwd := s.Cwd
	if cwd == "" {
		cwd = "/"
	}
	env := s.Env
	if !hasEnv(env, "PATH") {
		env = append(append([]string(nil), env...), defaultPath)
	}
	caps := append([]string(nil), defaultCaps...)
	var annotations map[string]string
	if s.HostSocket != "" {
		annotations = map[string]string{annotationHostSocket: s.HostSocket}
	}

	spec := &specs.Spec{
		Annotations: annotations,
		Version:     specVersion,
		Process: &specs.Process{
			Args: s.Args,
			Env:  env,
			Cwd:  cwd,
			User: specs.User{UID: 0, GID: 0},
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			Rlimits: []specs.POSIXRlimit{
				{Type: "RLIMIT_NOFILE", Hard: h.nofile, Soft: h.nofile},
			},
			// sudo and setuid binaries must keep working inside.
			NoNewPrivileges: false,
		},
		Root:     &specs.Root{Path: p.rootfs},
		Hostname: hostname,
		Mounts:   buildMounts(s.Mounts, p),
		Linux: &specs.Linux{
			CgroupsPath: cgroupPath(s.ID),
			Namespaces:  buildNamespaces(s.NetNS),
			Resources:   buildResources(s.Resources, h.memsw),
			Seccomp:     h.seccomp,
			MaskedPaths: maskedPaths, ReadonlyPaths: readonlyPaths,
		},
	}
	if ids != nil {
		spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		spec.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: ids.UID, Size: ids.Size}}
		spec.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: ids.GID, Size: ids.Size}}
	}
	return spec
}

// cgroupPath is absolute so that every runtime resolves it to the same
// directory under each controller's mount: /sys/fs/cgroup/<ctl>/sbx/<id>.
func cgroupPath(id string) string { return "/sbx/" + id }

func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if len(kv) > len(key) && kv[:len(key)] == key && kv[len(key)] == '=' {
			return true
		}
	}
	return false
}

func buildNamespaces(netns string) []specs.LinuxNamespace {
	return []specs.LinuxNamespace{
		{Type: specs.PIDNamespace},
		{Type: specs.MountNamespace},
		{Type: specs.IPCNamespace},
		{Type: specs.UTSNamespace},
		{Type: specs.NetworkNamespace, Path: netns},
		{Type: specs.CgroupNamespace},
	}
}

func buildMounts(extra []runtime.Mount, p bundlePaths) []specs.Mount {
	ms := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs",
			Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts",
			Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm",
			Options: []string{"nosuid", "noexec", "nodev", "mode=1777", shmSizeBytes}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		sysMount(p.sysfs),
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup",
			Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
		{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=755"}},
		{Destination: "/etc/hosts", Type: "bind", Source: p.hosts,
			Options: []string{"rbind", "nosuid", "nodev", "noexec"}},
	}
	if p.resolvConf != "" { // empty: keep the template's own resolv.conf
		ms = append(ms, specs.Mount{Destination: "/etc/resolv.conf", Type: "bind", Source: p.resolvConf,
			Options: []string{"rbind", "nosuid", "nodev", "noexec"}})
	}
	for _, m := range extra {
		opts := []string{"rbind", "nosuid", "nodev"}
		if m.ReadOnly {
			opts = append(opts, "ro")
		}
		ms = append(ms, specs.Mount{Destination: path.Clean(m.Target), Type: "bind", Source: m.Source, Options: opts})
	}
	return ms
}

// sysMount is /sys: a fresh sysfs, or the one mounted for the sandbox (a
// user namespace cannot mount the sysfs of a network namespace the host
// owns, see prepareNetNS).
func sysMount(bound string) specs.Mount {
	if bound != "" {
		return specs.Mount{Destination: "/sys", Type: "bind", Source: bound,
			Options: []string{"rbind", "nosuid", "noexec", "nodev", "ro"}}
	}
	return specs.Mount{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}}
}

func buildResources(r runtime.Resources, memsw bool) *specs.LinuxResources {
	res := &specs.LinuxResources{Devices: deviceRules()}
	if r.CPUs > 0 {
		quota := int64(r.CPUs * cpuPeriod)
		period := uint64(cpuPeriod)
		res.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	if r.Background {
		if res.CPU == nil {
			res.CPU = &specs.LinuxCPU{}
		}
		shares := uint64(backgroundShares)
		res.CPU.Shares = &shares
	}
	if r.MemoryMB > 0 {
		limit := int64(r.MemoryMB) << 20
		res.Memory = &specs.LinuxMemory{Limit: &limit}
		if memsw {
			// memory+swap equal to memory: the sandbox cannot swap its way
			// past the limit; the OOM killer acts inside its cgroup instead.
			res.Memory.Swap = &limit
		}
	}
	if r.PidsMax > 0 {
		pids := int64(r.PidsMax)
		res.Pids = &specs.LinuxPids{Limit: &pids}
	}
	return res
}

// deviceRules deny every device node except the standard ones the runtime
// creates in /dev (null, zero, full, random, urandom, tty, ptmx, pts).
func deviceRules() []specs.LinuxDeviceCgroup {
	c := func(major, minor int64) specs.LinuxDeviceCgroup {
		maj, mn := major, minor
		d := specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &maj, Access: "rwm"}
		if minor >= 0 {
			d.Minor = &mn
		}
		return d
	}
	return []specs.LinuxDeviceCgroup{
		{Allow: false, Access: "rwm"},
		c(1, 3), c(1, 5), c(1, 7), c(1, 8), c(1, 9), // null zero full random urandom
		c(5, 0), c(5, 1), c(5, 2), // tty console ptmx
		c(136, -1), // /dev/pts/*
	}
}
