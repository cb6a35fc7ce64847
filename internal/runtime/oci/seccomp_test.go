package oci

import (
	"fmt"
	goruntime "runtime"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// verdict evaluates a profile the way libseccomp does for one call: every
// rule naming the syscall whose argument conditions hold matches, the
// strictest matching action wins (errno over allow), and the default
// action applies when none matches. It returns "allow" or "errno N".
func verdict(p *specs.LinuxSeccomp, name string, args ...uint64) string {
	best := ""
	for _, r := range p.Syscalls {
		if !slices.Contains(r.Names, name) || !argsHold(r.Args, args) {
			continue
		}
		if r.Action == specs.ActErrno || best == "" {
			best = action(r.Action, r.ErrnoRet, p.DefaultErrnoRet)
		}
	}
	if best == "" {
		return action(p.DefaultAction, p.DefaultErrnoRet, p.DefaultErrnoRet)
	}
	return best
}

func action(a specs.LinuxSeccompAction, ret, def *uint) string {
	switch a {
	case specs.ActAllow:
		return "allow"
	case specs.ActErrno:
		if ret == nil {
			ret = def
		}
		if ret == nil {
			return "errno 1"
		}
		return fmt.Sprintf("errno %d", *ret)
	}
	return string(a)
}

func argsHold(conds []specs.LinuxSeccompArg, args []uint64) bool {
	for _, c := range conds {
		var v uint64
		if int(c.Index) < len(args) {
			v = args[c.Index]
		}
		ok := false
		switch c.Op {
		case specs.OpEqualTo:
			ok = v == c.Value
		case specs.OpNotEqual:
			ok = v != c.Value
		case specs.OpLessThan:
			ok = v < c.Value
		case specs.OpLessEqual:
			ok = v <= c.Value
		case specs.OpGreaterThan:
			ok = v > c.Value
		case specs.OpGreaterEqual:
			ok = v >= c.Value
		case specs.OpMaskedEqual:
			ok = v&c.Value == c.ValueTwo
		}
		if !ok {
			return false
		}
	}
	return true
}

// TestSeccompProfile pins what sandboxes can and cannot reach: a profile
// update that opens a closed surface, or closes one programs need, fails
// here.
func TestSeccompProfile(t *testing.T) {
	if goruntime.GOARCH != "amd64" {
		t.Skip("the expectations are written for amd64")
	}
	const (
		threadFlags = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
			unix.CLONE_THREAD | unix.CLONE_SYSVSEM | unix.CLONE_SETTLS | unix.CLONE_PARENT_SETTID | unix.CLONE_CHILD_CLEARTID
		eperm  = "errno 1"
		enosys = "errno 38"
		allow  = "allow"
	)
	minus1 := ^uint64(0)
	tests := []struct {
		name   string
		call   string
		args   []uint64
		native string // crun, runc
		sentry string // runsc
	}{
		// Closed.
		{"io_uring_setup", "io_uring_setup", nil, eperm, eperm},
		{"io_uring_enter", "io_uring_enter", nil, eperm, eperm},
		{"socket(AF_VSOCK)", "socket", []uint64{unix.AF_VSOCK, unix.SOCK_STREAM}, eperm, eperm},
		{"socket(AF_ALG)", "socket", []uint64{unix.AF_ALG, unix.SOCK_SEQPACKET}, eperm, eperm},
		{"personality(ADDR_NO_RANDOMIZE)", "personality", []uint64{0x0040000}, eperm, eperm},
		{"personality(READ_IMPLIES_EXEC)", "personality", []uint64{0x0400000}, eperm, eperm},
		{"personality(-1) as a 64-bit argument", "personality", []uint64{minus1}, eperm, eperm},
		{"unshare(CLONE_NEWUSER)", "unshare", []uint64{unix.CLONE_NEWUSER}, eperm, eperm},
		{"clone(CLONE_NEWUSER)", "clone", []uint64{unix.CLONE_NEWUSER | uint64(unix.SIGCHLD)}, eperm, eperm},
		{"clone(CLONE_NEWNET)", "clone", []uint64{unix.CLONE_NEWNET}, eperm, eperm},
		{"setns", "setns", nil, eperm, eperm},
		{"mount", "mount", nil, eperm, eperm},
		{"open_tree", "open_tree", nil, eperm, eperm},
		{"fsopen", "fsopen", nil, eperm, eperm},
		{"move_mount", "move_mount", nil, eperm, eperm},
		{"bpf", "bpf", nil, eperm, eperm},
		{"perf_event_open", "perf_event_open", nil, eperm, eperm},
		{"userfaultfd", "userfaultfd", nil, eperm, eperm},
		{"keyctl", "keyctl", nil, eperm, eperm},
		{"add_key", "add_key", nil, eperm, eperm},
		{"kexec_load", "kexec_load", nil, eperm, eperm},
		{"init_module", "init_module", nil, eperm, eperm},
		{"open_by_handle_at", "open_by_handle_at", nil, eperm, eperm},
		{"kcmp", "kcmp", nil, eperm, eperm},
		{"acct", "acct", nil, eperm, eperm},
		{"settimeofday", "settimeofday", nil, eperm, eperm},
		{"reboot", "reboot", nil, eperm, eperm},
		{"swapon", "swapon", nil, eperm, eperm},
		{"syslog", "syslog", nil, eperm, eperm},
		{"pidfd_getfd", "pidfd_getfd", nil, eperm, eperm},
		// clone3 passes its flags in memory: ENOSYS sends glibc to clone,
		// except under gVisor, whose errno action is always EPERM.
		{"clone3", "clone3", nil, enosys, allow},
		// Open: what programs need.
		{"clone(thread)", "clone", []uint64{threadFlags}, allow, allow},
		{"clone(fork)", "clone", []uint64{uint64(unix.SIGCHLD)}, allow, allow},
		{"socket(AF_INET)", "socket", []uint64{unix.AF_INET, unix.SOCK_STREAM}, allow, allow},
		{"socket(AF_INET6)", "socket", []uint64{unix.AF_INET6, unix.SOCK_DGRAM}, allow, allow},
		{"socket(AF_UNIX)", "socket", []uint64{unix.AF_UNIX, unix.SOCK_STREAM}, allow, allow},
		{"socket(AF_NETLINK)", "socket", []uint64{unix.AF_NETLINK, unix.SOCK_RAW}, allow, allow},
		{"personality(0)", "personality", []uint64{0}, allow, allow},
		{"personality(query)", "personality", []uint64{0xffffffff}, allow, allow},
		{"chroot", "chroot", nil, allow, allow},
		{"ptrace", "ptrace", nil, allow, allow},
		{"io_setup", "io_setup", nil, allow, allow},
		{"openat2", "openat2", nil, allow, allow},
		{"faccessat2", "faccessat2", nil, allow, allow},
		{"close_range", "close_range", nil, allow, allow},
		{"rseq", "rseq", nil, allow, allow},
		{"memfd_create", "memfd_create", nil, allow, allow},
		{"pidfd_open", "pidfd_open", nil, allow, allow},
	}
	for _, sentry := range []bool{false, true} {
		p, err := seccompProfile(defaultCaps, sentry)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(p.Architectures, []specs.Arch{specs.ArchX86_64}) {
			t.Errorf("sentry=%v: architectures %v; want the native x86_64 only", sentry, p.Architectures)
		}
		for _, tc := range tests {
			want := tc.native
			if sentry {
				want = tc.sentry
			}
			if got := verdict(p, tc.call, tc.args...); got != want {
				t.Errorf("sentry=%v: %s → %s; want %s", sentry, tc.name, got, want)
			}
		}
	}
}

// The capability set never includes what reaches past the sandbox.
func TestDefaultCaps(t *testing.T) {
	for _, c := range []string{"CAP_NET_RAW", "CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_MKNOD",
		"CAP_SETFCAP", "CAP_SYS_MODULE", "CAP_DAC_READ_SEARCH", "CAP_BPF", "CAP_PERFMON", "CAP_SYS_TIME"} {
		if slices.Contains(defaultCaps, c) {
			t.Errorf("sandboxes hold %s", c)
		}
	}
	for _, c := range []string{"CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER"} {
		if !slices.Contains(defaultCaps, c) {
			t.Errorf("sandboxes lack %s, which sudo and apt need", c)
		}
	}
}
