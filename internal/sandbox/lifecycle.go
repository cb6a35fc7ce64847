package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/atomicfile"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
)

// Lifecycle is what a sandbox does when it times out and when traffic
// reaches it paused (E2B's lifecycle: autoPause, autoPauseMemory,
// autoResume).
type Lifecycle struct {
	// DropMemory: an auto-pause keeps only the filesystem (E2B's
	// autoPauseMemory false); resuming boots the sandbox again.
	DropMemory bool `json:"dropMemory,omitempty"`
	// AutoResume: traffic through the proxy to the paused sandbox resumes
	// it (only a sandbox paused with its memory: one paused without must be
	// resumed explicitly, as E2B's).
	AutoResume bool `json:"autoResume,omitempty"`
	// Timeout is the sandbox's timeout at create, given again at an
	// automatic resume.
	Timeout time.Duration `json:"timeout,omitempty"`
}

// lifecycleFile keeps a sandbox's Lifecycle across restarts of the server,
// beside its saved layers. Only sandboxes with a non-default lifecycle
// have one.
// TODO(i15): a column of the sandboxes table once the store refactor lands.
const lifecycleFile = "lifecycle.json"

func (m *Manager) saveLifecycle(id string, lc Lifecycle) error {
	if lc == (Lifecycle{}) {
		return nil
	}
	if err := os.MkdirAll(m.layersDir(id), 0o700); err != nil {
		return err
	}
	b, _ := json.Marshal(lc)
	return replaceFile(filepath.Join(m.layersDir(id), lifecycleFile), b, 0o600)
}

// replaceFile puts data at path whole and durably (internal/atomicfile),
// so a server killed in the middle leaves the old file or the new one,
// never a torn one that a restart would misread (a lost timeout or egress
// policy), and two writers of one path (a pause marker and an egress
// update) never write or rename each other's. A host crash too leaves a
// whole file: a pause marker outlives the host's reboot, and a torn one
// would lose the sandbox.
func replaceFile(path string, data []byte, perm os.FileMode) error {
	return atomicfile.Write(path, data, perm)
}

func (m *Manager) loadLifecycle(id string) Lifecycle {
	var lc Lifecycle
	if b, err := os.ReadFile(filepath.Join(m.layersDir(id), lifecycleFile)); err == nil {
		_ = json.Unmarshal(b, &lc)
	}
	return lc
}

// LifecycleOf returns a live sandbox's lifecycle (zero for others).
func (m *Manager) LifecycleOf(id string) Lifecycle {
	l := m.lookup(id)
	if l == nil {
		return Lifecycle{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lifecycle
}

// wakes makes concurrent wake-ups of one sandbox share one resume.
type wakes struct {
	mu       sync.Mutex
	inflight map[string]*wake
}

type wake struct {
	done chan struct{}
	ok   bool
}

// Wake resumes a paused sandbox created with autoResume, for traffic
// through the proxy that found it paused; it reports whether the sandbox
// runs now. Many requests for one paused sandbox cause one resume: the
// others wait for it (bounded by their own ctx). A sandbox paused without
// its memory is not woken (E2B: it must be resumed explicitly).
func (m *Manager) Wake(ctx context.Context, id string) bool {
	l := m.lookup(id)
	if l == nil {
		return false
	}
	l.mu.Lock()
	paused, lc := l.sb.State == store.StatePaused, l.lifecycle
	l.mu.Unlock()
	if !paused {
		return true
	}
	if !lc.AutoResume {
		return false
	}
	if _, fsOnly := m.fsPausedState(id); fsOnly {
		return false
	}
	m.wakes.mu.Lock()
	if m.wakes.inflight == nil {
		m.wakes.inflight = map[string]*wake{}
	}
	w, joined := m.wakes.inflight[id]
	if !joined {
		w = &wake{done: make(chan struct{})}
		m.wakes.inflight[id] = w
	}
	m.wakes.mu.Unlock()
	if !joined {
		go func() {
			// Not the request's ctx: a client that gives up must not abort a
			// resume other requests wait for.
			rctx, cancel := context.WithTimeout(context.Background(), startTimeout)
			defer cancel()
			timeout := lc.Timeout
			if timeout <= 0 {
				timeout = DefaultTimeout
			}
			err := m.resume(rctx, l, int64(timeout/time.Second), true)
			if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
				m.log.Warn("auto-resume failed", "sandbox.id", id, "err", err)
			}
			if err == nil {
				m.log.Info("sandbox auto-resumed by traffic", "sandbox.id", id)
			}
			m.wakes.mu.Lock()
			delete(m.wakes.inflight, id)
			m.wakes.mu.Unlock()
			w.ok = err == nil
			close(w.done)
		}()
	}
	select {
	case <-w.done:
		return w.ok
	case <-ctx.Done():
		return false
	}
}
