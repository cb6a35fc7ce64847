package envd

import (
	"bufio"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestHostChannelCloseReleasesSocket: once close returns (and the socket
// file, the host's signal to checkpoint, is gone), no socket of envd may
// still be bound to the path. gVisor refuses to save a sandbox holding a
// listener bound on the host, and the failed save answered a disk-tier
// pause with 500 (TestPauseLatency in CI): net.UnixListener.Close unlinks
// the file first and leaves the close(2) to the goroutine blocked in
// Accept, which a busy machine may run only after the checkpoint began.
// GOMAXPROCS 1 keeps that goroutine from running before the check, so the
// test is not left to chance. /proc/net/unix lists bound sockets by path,
// also after their file was removed.
func TestHostChannelCloseReleasesSocket(t *testing.T) {
	if _, err := os.Stat("/proc/net/unix"); err != nil {
		t.Skipf("needs /proc/net/unix: %v", err)
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	path := filepath.Join(t.TempDir(), "envd.sock")
	h := &hostChannel{path: path, handler: http.NotFoundHandler(), log: slog.New(slog.DiscardHandler)}
	for i := range 20 {
		if err := h.open(); err != nil {
			t.Fatal(err)
		}
		if !boundUnix(t, path) {
			t.Fatalf("cycle %d: %s not listed in /proc/net/unix while open", i, path)
		}
		h.close()
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Fatalf("cycle %d: socket file after close: %v; want it gone", i, err)
		}
		if boundUnix(t, path) {
			t.Fatalf("cycle %d: a socket is still bound to %s after close returned", i, path)
		}
	}
}

// boundUnix reports whether /proc/net/unix lists a socket bound to path.
func boundUnix(t *testing.T, path string) bool {
	t.Helper()
	f, err := os.Open("/proc/net/unix")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 8 && f[len(f)-1] == path {
			return true
		}
	}
	return false
}
