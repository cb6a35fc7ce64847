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
)

// hostChannel is the unix-socket listener the host talks to. It can be
// closed and opened again: a gVisor sandbox cannot be checkpointed while
// it holds a socket bound on the host (runsc --host-uds=create), so envd
// lets go of it before a checkpoint and binds it again after the restore.
type hostChannel struct {
	path    string
	handler http.Handler
	log     *slog.Logger

	mu  sync.Mutex
	srv *http.Server
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
	ln, err := net.Listen("unix", h.path)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", h.path, err)
	}
	srv := &http.Server{Handler: h.handler, ErrorLog: slog.NewLogLogger(h.log.Handler(), slog.LevelDebug)}
	h.srv = srv
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.log.Error("host socket stopped", "err", err)
		}
	}()
	h.log.Info("envd listening", "socket", h.path, "version", Version)
	return nil
}

// close stops listening, cuts the host's open connections and removes the
// socket file (which tells a waiting checkpoint hook it is done).
func (h *hostChannel) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.srv == nil {
		return
	}
	_ = h.srv.Close()
	h.srv = nil
	_ = os.Remove(h.path)
	h.log.Info("envd host socket closed", "socket", h.path)
}
