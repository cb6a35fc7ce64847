package oci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"
)

// A user namespace is made by a child process (newUserNS), and a Go
// program cannot vfork one: the child must wait for its maps, so the
// fork copies the server's page tables and file table (a thousand
// sandboxes: 120 MB of memory, 3,000 descriptors), and the child's exit
// tears both down again. That grew the server's CPU
// per create by ~2 ms from the first to the tenth hundred sandboxes
// (docs/performance.md). usernsMaker does those forks from a small helper
// instead: this binary re-executed once, serving requests on a socket and
// sending each namespace back as a descriptor. It exits when the socket
// closes (the server is gone).
type usernsMaker struct {
	sock int       // the server's end, while cmd runs
	cmd  *exec.Cmd // nil: no helper runs
	off  bool      // it could not start: not tried again
}

// usernsMakerEnv starts this binary as the helper (see init below), its
// socket on fd 3.
const usernsMakerEnv = "_SBX_USERNS_MAKER"

func init() {
	if os.Getenv(usernsMakerEnv) == "1" {
		serveUserNS(3)
		os.Exit(0)
	}
}

// serveUserNS answers requests (uid, gid, size: three little-endian
// uint32) with a user namespace ("k" and its descriptor) or an error
// ("e" and the text), until the socket closes.
func serveUserNS(sock int) {
	unix.CloseOnExec(sock) // the namespace holders must not keep it open
	var req [12]byte
	for {
		n, err := unix.Read(sock, req[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return
		}
		if n != len(req) {
			_, _ = unix.Write(sock, []byte("ebad request"))
			continue
		}
		r := idRange{UID: binary.LittleEndian.Uint32(req[0:]), GID: binary.LittleEndian.Uint32(req[4:]),
			Size: binary.LittleEndian.Uint32(req[8:])}
		f, err := newUserNS(r)
		if err != nil {
			_, _ = unix.Write(sock, []byte("e"+err.Error()))
			continue
		}
		err = unix.Sendmsg(sock, []byte("k"), unix.UnixRights(int(f.Fd())), nil, 0)
		f.Close()
		if err != nil {
			return
		}
	}
}

// start runs the helper. The caller holds usernsCache.mu.
func (m *usernsMaker) start() error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket pair for the user namespace helper: %w", err)
	}
	child := os.NewFile(uintptr(fds[1]), "userns-helper")
	defer child.Close()
	cmd := exec.Command("/proc/self/exe")    // the running binary, even if replaced on disk since
	cmd.Args = []string{"sbx-userns-helper"} // what ps shows
	cmd.Env = []string{usernsMakerEnv + "=1"}
	cmd.ExtraFiles = []*os.File{child}
	if err := cmd.Start(); err != nil {
		unix.Close(fds[0])
		return fmt.Errorf("start the user namespace helper: %w", err)
	}
	go func() { _ = cmd.Wait() }() // reaped whenever it ends
	m.sock, m.cmd = fds[0], cmd
	return nil
}

// stop ends the helper (it exits when its socket closes).
func (m *usernsMaker) stop() {
	if m.cmd != nil {
		unix.Close(m.sock)
		m.cmd = nil
	}
}

// make asks the helper for r's namespace, starting it at first use. A
// helper that fails is stopped (the next call starts another); the caller
// then makes the namespace itself. The caller holds usernsCache.mu:
// requests are one at a time, each a fork of a small process.
func (m *usernsMaker) make(r idRange) (*os.File, error) {
	if m.off {
		return nil, errors.New("no user namespace helper")
	}
	if m.cmd == nil {
		if err := m.start(); err != nil {
			m.off = true
			return nil, err
		}
	}
	f, err := m.ask(r)
	if err != nil && !errors.Is(err, errHelperRefused) {
		m.stop()
	}
	return f, err
}

var errHelperRefused = errors.New("user namespace helper")

func (m *usernsMaker) ask(r idRange) (*os.File, error) {
	var req [12]byte
	binary.LittleEndian.PutUint32(req[0:], r.UID)
	binary.LittleEndian.PutUint32(req[4:], r.GID)
	binary.LittleEndian.PutUint32(req[8:], r.Size)
	if _, err := unix.Write(m.sock, req[:]); err != nil {
		return nil, fmt.Errorf("ask the user namespace helper: %w", err)
	}
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(m.sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("read the user namespace helper's answer: %w", err)
	}
	if n == 0 {
		return nil, errors.New("the user namespace helper is gone")
	}
	var fds []int
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(msgs) == 1 {
		fds, _ = unix.ParseUnixRights(&msgs[0])
	}
	if buf[0] != 'k' || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("%w: %s", errHelperRefused, buf[1:n])
	}
	// Only a user namespace is ever used as one.
	if t, err := unix.IoctlRetInt(fds[0], unix.NS_GET_NSTYPE); err != nil || t != unix.CLONE_NEWUSER {
		unix.Close(fds[0])
		return nil, fmt.Errorf("the user namespace helper sent something else (type %#x, %v)", t, err)
	}
	return os.NewFile(uintptr(fds[0]), "userns"), nil
}
