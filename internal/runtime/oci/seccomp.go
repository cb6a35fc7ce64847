package oci

import (
	"fmt"
	"slices"

	mobyseccomp "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The seccomp profile of every sandbox is Docker's default profile
// (github.com/moby/profiles/seccomp), rendered for the sandbox's capability
// set, and then made stricter where that costs nothing.
//
// Docker's profile is an allow list: a syscall it does not name fails with
// EPERM. Among what that closes, because sandboxes hold no CAP_SYS_ADMIN,
// CAP_BPF, CAP_PERFMON or CAP_SYS_PTRACE: io_uring_*, new user and other
// namespaces (unshare, clone with namespace flags, setns), both mount APIs
// (mount, open_tree, move_mount, fsopen...), bpf, perf_event_open,
// userfaultfd, keyctl/add_key/request_key, kexec_*, *_module, reboot, swapon,
// acct, settimeofday, socket(AF_VSOCK) and socket(AF_ALG), personality other
// than the five harmless values (Linux, and UNAME26/LINUX32 and the query)
// compared as full 64-bit arguments, and clone3 (ENOSYS, so that glibc falls
// back to clone, whose flags seccomp can inspect).
//
// An allow list breaks syscalls newer than the list; the profile moves with
// the Docker ecosystem (go get -u github.com/moby/profiles/seccomp), which is
// the largest user base that finds such breakage first.
//
// Cost: libseccomp compiling this profile takes crun ~6 ms (crun 1.8.1,
// against ~1 ms for the old short deny list), so crun compiles it once per
// driver (seccompcache.go). runc compiles it at every start.
//
// TestSeccompProfile pins the surfaces that must stay closed, so a profile
// update that opens one fails loudly. What sbx adds on top:
//   - Only the native architecture: 32-bit x86 and x32 programs are killed
//     by the filter instead of reaching the kernel's compat syscall layer.
//     That layer is where a good share of container escapes lived, and on
//     32-bit x86 socket(2) goes through socketcall(2), whose arguments
//     seccomp cannot inspect, so the socket domain filter (no AF_VSOCK,
//     no AF_ALG) would not hold there. gVisor does not run 32-bit programs
//     either, so no template can rely on them.
//   - Under runsc (sentry == true) gVisor's own kernel serves the syscalls
//     and enforces the profile (--oci-seccomp); its errno action always
//     returns EPERM, whatever errnoRet says. clone3 → ENOSYS would then be
//     clone3 → EPERM, which glibc does not fall back from: every
//     pthread_create fails ("can't start new thread" in Python). clone3 is
//     allowed there: a namespace it makes is gVisor's, not the host kernel's.

// seccompProfile renders the profile for a process holding caps. sentry is
// true under runsc.
func seccompProfile(caps []string, sentry bool) (*specs.LinuxSeccomp, error) {
	rs := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: caps}}}
	p, err := mobyseccomp.GetDefaultProfile(rs)
	if err != nil {
		return nil, fmt.Errorf("render the default seccomp profile: %w", err)
	}
	if len(p.Architectures) > 0 {
		p.Architectures = p.Architectures[:1] // the native one comes first
	}
	out := p.Syscalls[:0]
	for _, sc := range p.Syscalls {
		if sentry && slices.Contains(sc.Names, "clone3") && sc.Action == specs.ActErrno {
			sc = specs.LinuxSyscall{Names: []string{"clone3"}, Action: specs.ActAllow}
		}
		out = append(out, sc)
	}
	p.Syscalls = out
	return p, nil
}
