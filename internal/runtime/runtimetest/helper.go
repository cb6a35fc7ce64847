package runtimetest

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// probeSource is a tiny static program run inside sandboxes, for what a
// busybox shell cannot do:
//
//	probe uds-server PATH   listen on a unix socket and greet every client,
//	                        the way envd serves the host over /.sbx/run/envd.sock
//	probe syscalls          try the syscalls the seccomp profile must refuse
//	                        and print "name result" lines ("ok" or the errno)
const probeSource = `package main

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"unsafe"
)

func main() {
	switch os.Args[1] {
	case "uds-server":
		udsServer(os.Args[2])
	case "syscalls":
		syscalls()
	}
}

func udsServer(path string) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		c.Write([]byte("pong from " + os.Getenv("HOSTNAME") + "\n"))
		c.Close()
	}
}

func result(name string, r1 uintptr, errno syscall.Errno) {
	if errno != 0 {
		fmt.Printf("%s %d\n", name, int(errno))
		return
	}
	fmt.Printf("%s ok\n", name)
	_ = r1
}

func syscalls() {
	var params [120]byte
	r, _, e := syscall.RawSyscall(425, 8, uintptr(unsafe.Pointer(&params)), 0) // io_uring_setup
	result("io_uring_setup", r, e)
	r, _, e = syscall.RawSyscall(syscall.SYS_SOCKET, 40, syscall.SOCK_STREAM, 0) // AF_VSOCK
	result("socket(AF_VSOCK)", r, e)
	r, _, e = syscall.RawSyscall(syscall.SYS_PERSONALITY, ^uintptr(0), 0, 0)
	result("personality(0xffffffff)", r, e)
	r, _, e = syscall.RawSyscall(syscall.SYS_PERSONALITY, 0x0040000, 0, 0) // ADDR_NO_RANDOMIZE
	result("personality(ADDR_NO_RANDOMIZE)", r, e)
	r, _, e = syscall.RawSyscall(syscall.SYS_UNSHARE, syscall.CLONE_NEWUSER, 0, 0)
	result("unshare(CLONE_NEWUSER)", r, e)
	r, _, e = syscall.RawSyscall(syscall.SYS_SOCKET, syscall.AF_PACKET, syscall.SOCK_RAW, 0)
	result("socket(AF_PACKET)", r, e)
	r, _, e = syscall.RawSyscall(syscall.SYS_SOCKET, syscall.AF_INET, syscall.SOCK_STREAM, 0)
	result("socket(AF_INET)", r, e)
}
`

var (
	probeOnce sync.Once
	probeDir  string
	probeErr  string
)

// buildProbe compiles probeSource, once per machine and version of the
// source, into a directory of its own under the system's temp dir (to be
// bind-mounted read-only; root in a sandbox with a user namespace must be
// able to reach it) and returns that directory.
func buildProbe(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		Skip(t, "the go toolchain is needed to build the in-sandbox test program")
	}
	probeOnce.Do(func() { probeDir, probeErr = compileProbe(goBin) })
	if probeErr != "" {
		t.Fatal(probeErr)
	}
	return probeDir
}

func compileProbe(goBin string) (string, string) {
	sum := sha256.Sum256([]byte(probeSource))
	dir := filepath.Join(os.TempDir(), "sbx-probe-"+hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(filepath.Join(dir, "probe")); err == nil {
		return dir, ""
	}
	src, err := os.MkdirTemp("", "sbx-probe-src-")
	if err != nil {
		return "", err.Error()
	}
	defer os.RemoveAll(src)
	for name, content := range map[string]string{"go.mod": "module probe\n\ngo 1.22\n", "main.go": probeSource} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(content), 0o644); err != nil {
			return "", err.Error()
		}
	}
	tmp, err := os.MkdirTemp("", "sbx-probe-out-")
	if err != nil {
		return "", err.Error()
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command(goBin, "build", "-o", filepath.Join(tmp, "probe"), ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", "build the in-sandbox test program: " + err.Error() + "\n" + string(b)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err.Error()
	}
	// Another test binary may have won the race: either copy will do.
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "probe")); serr != nil {
			return "", err.Error()
		}
	}
	return dir, ""
}

// Dir returns a fresh temporary directory that root in a sandbox can
// reach and write: where root inside is an unprivileged host user (user
// namespaces), t.TempDir's 0700 directories are closed to it, so the
// directories above it are opened for search (o+x, not read).
func Dir(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	for p := d; p != filepath.Clean(os.TempDir()) && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}
