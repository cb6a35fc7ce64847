package oci

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"

	"golang.org/x/sys/unix"
)

// crun protects itself from a sandbox that would overwrite the host's
// runtime binary through /proc/<pid>/exe (CVE-2019-5736): unless the
// binary it runs from is a sealed memfd, it bind-mounts /proc/self/exe
// read-only on a temporary file and executes itself again from there.
// That second exec (dynamic linking of crun and its eight libraries
// again, a mount, an unmount) costs every `crun run` and `crun delete` a
// few milliseconds of CPU on this kind of host, where page faults and
// execs are dear.
//
// The driver does the copy once instead: it copies the binary into a
// memfd sealed against any write, growth or shrink (the seal set crun
// checks for) and runs crun from /proc/self/fd/N. The protection is
// the same as crun's own (nothing can write to a sealed memfd, and no
// sandbox can reach the server's descriptors), made once per driver
// instead of once per command. A binary replaced on disk (an upgrade)
// is used from the next start of the server, which also reads its
// version then.
const sealsCrunChecks = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE

// sealedBinary copies the binary at path into a sealed memfd and checks
// that it runs (`--version` answers as the file does: a kernel with
// vm.memfd_noexec=2 refuses to execute memfds). The caller keeps the
// file open for as long as it runs the path it returns.
func sealedBinary(path string, wantVersion []byte) (*os.File, string, error) {
	src, err := os.Open(path)
	if err != nil {
		return nil, "", err
	}
	defer src.Close()
	f, err := sealedMemfd("crun", src)
	if err != nil {
		return nil, "", fmt.Errorf("copy %s into a sealed memfd: %w", path, err)
	}
	// The path is resolved by the child after fork, in which the
	// descriptor is still open (close-on-exec closes it only once crun
	// runs, and crun finds its own image through /proc/self/exe).
	exe := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
	cmd := exec.Command(exe, "--version")
	cmd.Args[0] = "crun"
	out, err := cmd.CombinedOutput()
	if err != nil {
		f.Close()
		return nil, "", fmt.Errorf("run crun from a sealed memfd: %w: %s", err, bytes.TrimSpace(out))
	}
	if !bytes.Equal(out, wantVersion) {
		f.Close()
		return nil, "", fmt.Errorf("crun from a sealed memfd answers %q, the file %q", firstLine(out), firstLine(wantVersion))
	}
	return f, exe, nil
}

// sealedMemfd returns an executable memfd holding content, sealed against
// any write, growth or shrink (the seal set crun checks for).
func sealedMemfd(name string, content io.Reader) (*os.File, error) {
	// MFD_EXEC: executable even where vm.memfd_noexec=1 makes memfds
	// noexec by default; kernels before 6.3 do not know the flag.
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:"+name)
	if _, err := io.Copy(f, content); err != nil {
		f.Close()
		return nil, err
	}
	if err := unix.Fchmod(fd, 0o555); err != nil {
		f.Close()
		return nil, fmt.Errorf("chmod memfd: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, sealsCrunChecks); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal memfd: %w", err)
	}
	return f, nil
}
