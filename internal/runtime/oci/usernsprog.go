package oci

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	goruntime "runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
)

// A user namespace for a uid range needs a process that is in it while
// the driver writes its id maps and opens it. The server cannot be that
// process (a multithreaded program cannot unshare a user namespace), and
// starting a copy of it costs ~3 ms of CPU on a PVM host even when it is
// stopped at its exec (stoppedUserNS), plus a fork of the server's page
// tables, which is why those forks run in a helper (usernsMaker). A host
// filling up with sandboxes pays that at every create: 7% of all CPU at
// density in perf.
//
// unshareProgram is the smallest such process: a static x86-64 program
// of under 200 bytes, run from a sealed memfd, that unshares a user namespace,
// writes one byte to stdout, waits for stdin to close and exits (exit
// status 1, and nothing written, when the unshare fails). Starting it is
// a vfork of the server and an exec of one page: ~1 ms of CPU, with no
// helper. Other architectures, and hosts that refuse to execute memfds,
// keep the helper.
var unshareCode = []byte{
	0xbf, 0x00, 0x00, 0x00, 0x10, // mov edi, CLONE_NEWUSER
	0xb8, 0x10, 0x01, 0x00, 0x00, // mov eax, 272 (unshare)
	0x0f, 0x05, // syscall
	0x85, 0xc0, // test eax, eax
	0x75, 0x2b, // jnz fail (43 bytes on)
	0xbf, 0x01, 0x00, 0x00, 0x00, // mov edi, 1
	0x48, 0x89, 0xe6, // mov rsi, rsp
	0xba, 0x01, 0x00, 0x00, 0x00, // mov edx, 1
	0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1 (write)
	0x0f, 0x05, // syscall: write(1, rsp, 1), the "ready" byte
	0x31, 0xff, // xor edi, edi
	0x48, 0x89, 0xe6, // mov rsi, rsp
	0xba, 0x01, 0x00, 0x00, 0x00, // mov edx, 1
	0x31, 0xc0, // xor eax, eax (read)
	0x0f, 0x05, // syscall: read(0, rsp, 1) until stdin closes
	0x31, 0xff, // xor edi, edi
	0xb8, 0x3c, 0x00, 0x00, 0x00, // mov eax, 60 (exit)
	0x0f, 0x05, // syscall: exit(0)
	// fail:
	0xbf, 0x01, 0x00, 0x00, 0x00, // mov edi, 1
	0xb8, 0x3c, 0x00, 0x00, 0x00, // mov eax, 60 (exit)
	0x0f, 0x05, // syscall: exit(1)
}

// unshareProgram wraps unshareCode in an ELF executable: the 64-byte
// header, one loadable read+execute segment (the whole file, at
// 0x400000), the code right after them.
func unshareProgram() []byte {
	const base, ehdr, phdr = 0x400000, 64, 56
	b := make([]byte, ehdr+phdr+len(unshareCode))
	le := binary.LittleEndian
	copy(b, []byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* little-endian */, 1 /* version */})
	le.PutUint16(b[16:], 2)              // ET_EXEC
	le.PutUint16(b[18:], 62)             // EM_X86_64
	le.PutUint32(b[20:], 1)              // version
	le.PutUint64(b[24:], base+ehdr+phdr) // entry point
	le.PutUint64(b[32:], ehdr)           // program headers' offset
	le.PutUint16(b[52:], ehdr)           // header size
	le.PutUint16(b[54:], phdr)           // program header size
	le.PutUint16(b[56:], 1)              // one program header
	p := b[ehdr:]
	le.PutUint32(p[0:], 1)               // PT_LOAD
	le.PutUint32(p[4:], 5)               // PF_R | PF_X
	le.PutUint64(p[16:], base)           // virtual address (file offset 0)
	le.PutUint64(p[24:], base)           // physical address
	le.PutUint64(p[32:], uint64(len(b))) // size in the file
	le.PutUint64(p[40:], uint64(len(b))) // size in memory
	le.PutUint64(p[48:], 0x1000)         // alignment
	copy(b[ehdr+phdr:], unshareCode)
	return b
}

// unshareRunner runs unshareProgram; the zero value loads it at first use.
type unshareRunner struct {
	once sync.Once
	f    *os.File // the sealed memfd, open for as long as the driver runs
	path string
	err  error
	off  atomic.Bool // it could not be executed
}

var errNoUnshareProgram = errors.New("no unshare program on this host")

func (u *unshareRunner) load() error {
	u.once.Do(func() {
		if goruntime.GOARCH != "amd64" {
			u.err = fmt.Errorf("%w: it is x86-64 code", errNoUnshareProgram)
			return
		}
		f, err := sealedMemfd("sbx-userns", bytes.NewReader(unshareProgram()))
		if err != nil {
			u.err = fmt.Errorf("%w: %v", errNoUnshareProgram, err)
			return
		}
		u.f, u.path = f, "/proc/self/fd/"+strconv.Itoa(int(f.Fd()))
	})
	return u.err
}

// make returns r's user namespace as an open /proc/<pid>/ns/user file.
func (u *unshareRunner) make(r idRange) (*os.File, error) {
	if err := u.load(); err != nil {
		return nil, err
	}
	if u.off.Load() {
		return nil, errNoUnshareProgram
	}
	cmd := exec.Command(u.path)
	cmd.Args[0] = "sbx-userns"
	cmd.Env = []string{}
	// No parent-death signal (Go ties it to the forking thread, which a
	// goroutine locking and leaving it could end early): should the
	// server die, its end of stdin closes and the program exits, or a
	// write to its stdout kills it.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		stdin.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOEXEC) {
			// Memfds not executable here (vm.memfd_noexec, a security
			// module): the same next time.
			u.off.Store(true)
			return nil, fmt.Errorf("%w: %v", errNoUnshareProgram, err)
		}
		return nil, fmt.Errorf("start the unshare program: %w", err)
	}
	// Closing stdin ends the child; it is reaped before its pid could be
	// reused, so the /proc paths below are always its own.
	waited := false
	defer func() {
		if !waited {
			stdin.Close()
			_ = cmd.Wait()
		}
	}()
	var ready [1]byte
	if _, err := io.ReadFull(stdout, ready[:]); err != nil {
		stdin.Close()
		werr := cmd.Wait()
		waited = true
		return nil, fmt.Errorf("unshare a user namespace: the program ended without one (%v)", werr)
	}
	// The maps as Go's SysProcAttr writes them for the other makers:
	// setgroups denied first (nothing runs in the namespace, which only
	// shifts ids for idmapped mounts, but the same namespace either way).
	proc := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/"
	for _, w := range []struct{ file, text string }{
		{"uid_map", fmt.Sprintf("0 %d %d\n", r.UID, r.Size)},
		{"setgroups", "deny"},
		{"gid_map", fmt.Sprintf("0 %d %d\n", r.GID, r.Size)},
	} {
		if err := os.WriteFile(proc+w.file, []byte(w.text), 0); err != nil {
			return nil, fmt.Errorf("write the new user namespace's %s: %w", w.file, err)
		}
	}
	ns, err := os.Open(proc + "ns/user")
	if err != nil {
		return nil, fmt.Errorf("open the new user namespace: %w", err)
	}
	return ns, nil
}
