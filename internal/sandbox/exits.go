package sandbox

import (
	"context"
	"errors"
	"sync"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
)

// Kill reasons of sandboxes whose init ended on its own (the runtime's
// runtime.Exit reasons).
const (
	// ReasonOOM: the OOM killer ended the sandbox: it reached its memory
	// limit, which its disk (a tmpfs) counts against.
	ReasonOOM = runtime.ExitOOM
	// ReasonExited: the sandbox's init (envd) exited or was killed from
	// inside.
	ReasonExited = runtime.ExitExited
)

// exitWatch keeps one watcher per tracked sandbox: a goroutine blocked in
// the driver's ExitWatcher.Wait (a pidfd in the Go runtime's poller, no
// thread). When a sandbox's init ends without the manager having stopped
// it, the sandbox is recorded killed with the runtime's reason (a killed
// event, so webhooks fire) and everything it holds is freed at once:
// container and memory, network, run dir. Otherwise a dead sandbox would
// be reported running, and keep its memory (its disk is a tmpfs), until
// its timeout.
type exitWatch struct {
	mu       sync.Mutex
	watchers map[string]*exitWatcher
}

type exitWatcher struct{ cancel context.CancelFunc }

// watchExit starts watching the init of a tracked sandbox, replacing any
// earlier watcher of it (a sandbox restored from disk has a new init).
func (m *Manager) watchExit(l *live) {
	w, ok := m.driver.(runtime.ExitWatcher)
	if !ok {
		return
	}
	id := l.sb.ID
	ctx, cancel := context.WithCancel(context.Background())
	me := &exitWatcher{cancel: cancel}
	m.exits.mu.Lock()
	if m.exits.watchers == nil {
		m.exits.watchers = map[string]*exitWatcher{}
	}
	if old := m.exits.watchers[id]; old != nil {
		old.cancel()
	}
	m.exits.watchers[id] = me
	m.exits.mu.Unlock()
	go func() {
		defer m.unwatchExit(id, me)
		ex, err := w.Wait(ctx, id)
		switch {
		case ctx.Err() != nil: // replaced, or the manager stopped watching
			return
		case errors.Is(err, errdefs.ErrFailedPrecondition): // checkpointed: resume watches the restored init
			return
		case errors.Is(err, runtime.ErrNotFound): // already destroyed (Recover of a lost sandbox)
			return
		case err != nil:
			m.log.Warn("cannot watch sandbox init; its exit will go unnoticed until its timeout", "sandbox.id", id, "err", err)
			return
		}
		m.initEnded(l, ex)
	}()
}

// unwatchExit forgets w as id's watcher, unless another replaced it.
func (m *Manager) unwatchExit(id string, w *exitWatcher) {
	m.exits.mu.Lock()
	defer m.exits.mu.Unlock()
	if m.exits.watchers[id] == w {
		delete(m.exits.watchers, id)
	}
	w.cancel()
}

// initEnded handles the end of a tracked sandbox's init. It ignores ends
// the manager caused itself: a kill (the sandbox is no longer tracked), a
// checkpoint to disk (the sandbox is paused: a frozen sandbox cannot end
// on its own, and a checkpoint that failed midway records its own kill),
// a restore that has already started a new init (running again).
func (m *Manager) initEnded(l *live, ex runtime.Exit) {
	id := l.sb.ID
	// A pause, checkpoint or resume in progress holds l.mu: wait for it to
	// finish, so its outcome is what the checks below see.
	l.mu.Lock()
	paused := l.sb.State == store.StatePaused
	l.mu.Unlock()
	if paused || m.lookup(id) != l {
		return
	}
	ctx := context.Background()
	switch st, err := m.driver.State(ctx, id); {
	case err == nil && st == runtime.StatusCheckpointed:
		return
	case err == nil && (st == runtime.StatusRunning || st == runtime.StatusPaused):
		m.watchExit(l)
		return
	}
	data := map[string]any{}
	if ex.Code >= 0 {
		data["exit_code"] = ex.Code
	}
	m.log.Warn("sandbox init ended on its own; recording the sandbox killed and freeing it",
		"sandbox.id", id, "reason", ex.Reason, "exit_code", ex.Code)
	if err := m.killWith(ctx, id, ex.Reason, data); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		m.log.Error("record sandbox whose init ended", "sandbox.id", id, "err", err)
	}
}
