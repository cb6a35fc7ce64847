package envd

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// hostChannel is the unix-socket listener the host talks to. It can be
// closed and opened again: a gVisor sandbox cannot be checkpointed while
// it holds a socket bound on the host (runsc --host-uds=create), so envd
// lets go of it before a checkpoint and binds it again after the restore.
type hostChannel struct {
	path    string
	handler http.Handler
	log     *slog.Logger

	mu   sync.Mutex
	srv  *http.Server
	done chan struct{} // closed once srv.Serve returned: the listener's fd is closed
}

// open listens on the socket unless already listening.
func (h *hostChannel) open() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.srv != nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(h.path), 0o755); err != nil {
		return fmt.Errorf("create socket directory: %w", err)
	}
	_ = os.Remove(h.path) // stale socket of a previous envd
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: h.path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("listen on %s: %w", h.path, err)
	}
	// close removes the file itself, after the socket is really closed
	// (see there); the listener's own unlink comes too early.
	ln.SetUnlinkOnClose(false)
	srv := &http.Server{Handler: h.handler, ErrorLog: slog.NewLogLogger(h.log.Handler(), slog.LevelDebug)}
	done := make(chan struct{})
	h.srv, h.done = srv, done
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.log.Error("host socket stopped", "err", err)
		}
	}()
	h.log.Info("envd listening", "socket", h.path, "version", Version)
	return nil
}

// close stops listening, cuts the host's open connections and removes the
// socket file (which tells a waiting checkpoint hook it is done).
//
// The file goes only once the listening socket is closed: gVisor cannot
// save a sandbox that still holds it, and the host checkpoints as soon as
// the file is gone. Closing a Go listener only marks it closed; the
// close(2) happens when the goroutine blocked in Accept lets go of it,
// which on a busy machine may be after the host started the checkpoint.
// Serve returns only after that Accept returned, so its end is the sign.
// If it does not end in time the file stays: the host gives up on the
// checkpoint and the sandbox lives on, rather than dying in a failed save.
func (h *hostChannel) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.srv == nil {
		return
	}
	_ = h.srv.Close()
	done := h.done
	h.srv, h.done = nil, nil
	select {
	case <-done:
	case <-time.After(hostCloseWait):
		h.log.Error("host socket still open after close; keeping its file so no checkpoint starts",
			"socket", h.path, "waited", hostCloseWait)
		return
	}
	_ = os.Remove(h.path)
	h.log.Info("envd host socket closed", "socket", h.path)
}

// hostCloseWait bounds close's wait for the listening socket to be closed
// (well under the host's 10 s wait for the file to go).
const hostCloseWait = 5 * time.Second
