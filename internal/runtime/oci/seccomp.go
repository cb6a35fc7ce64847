package oci

import (
	goruntime "runtime"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// deniedSyscalls are refused with EPERM inside every sandbox.
//
// Why a deny list and not Docker's allow list: sandboxes run arbitrary,
// freshly generated code on whatever glibc/Python/Node a template ships, and
// an allow list silently breaks every syscall newer than the list (clone3,
// openat2, faccessat2 and friends have each broken containers for months).
// The sandbox holds no CAP_SYS_ADMIN, so the kernel already refuses the
// privileged operations; this list removes the kernel attack surface that is
// reachable without privileges (user namespaces, bpf, perf, userfaultfd,
// keyrings, new mount API) and makes the privileged ones fail even if a
// capability slips through.
var deniedSyscalls = []string{
	// Kernel and module loading, power, swap.
	"kexec_load", "kexec_file_load",
	"init_module", "finit_module", "delete_module", "create_module",
	"reboot", "swapon", "swapoff",
	// Mounting and changing the root (both mount APIs).
	"mount", "umount2", "pivot_root", "mount_setattr",
	"fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
	// Namespaces: unprivileged user namespaces are the classic escalation path.
	"unshare", "setns",
	// Large, frequently exploited kernel surfaces.
	"bpf", "perf_event_open", "userfaultfd",
	"keyctl", "add_key", "request_key",
	"open_by_handle_at",
	"lookup_dcookie", "kcmp",
	// Host-global state.
	"acct", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
	"quotactl", "quotactl_fd", "syslog", "iopl", "ioperm",
	"nfsservctl", "uselib", "vm86", "vm86old",
}

// seccompProfile builds the default profile for this machine's architecture.
// sentry is true under runsc, where gVisor's sentry serves the syscalls and
// enforces the profile itself.
func seccompProfile(sentry bool) *specs.LinuxSeccomp {
	eperm := uint(unix.EPERM)
	enosys := uint(unix.ENOSYS)
	p := &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: seccompArches(),
		Syscalls: []specs.LinuxSyscall{
			{Names: deniedSyscalls, Action: specs.ActErrno, ErrnoRet: &eperm},
			// clone cannot be denied outright; refuse only new user namespaces.
			// (On s390x the flags are the second argument; we do not target it.)
			{
				Names:    []string{"clone"},
				Action:   specs.ActErrno,
				ErrnoRet: &eperm,
				Args: []specs.LinuxSeccompArg{{
					Index: 0, Value: unix.CLONE_NEWUSER, ValueTwo: unix.CLONE_NEWUSER,
					Op: specs.OpMaskedEqual,
				}},
			},
		},
	}
	if !sentry {
		// clone3 passes its flags in memory, which seccomp cannot inspect.
		// ENOSYS (not EPERM) makes glibc fall back to clone, filtered above.
		// Under gVisor this rule makes every glibc pthread_create fail
		// ("can't start new thread" in Python), and a user namespace made
		// there is one of gVisor's, not the host kernel's: runsc skips it.
		p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &enosys})
	}
	return p
}

// seccompArches lists the native architecture and its compat modes, so the
// deny list also applies to 32-bit syscalls instead of killing 32-bit programs.
func seccompArches() []specs.Arch {
	switch goruntime.GOARCH {
	case "amd64":
		return []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}
	case "arm64":
		return []specs.Arch{specs.ArchAARCH64, specs.ArchARM}
	default:
		return nil // the runtime's native architecture only
	}
}
