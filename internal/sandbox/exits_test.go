package sandbox

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/agentauth"
	"github.com/sbxdev/sbx/internal/datadir"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
)

// exitDriver is a runtime driver whose sandboxes' inits end when the test
// says so (or when they are deleted, as a real runtime's do).
type exitDriver struct {
	mu      sync.Mutex
	state   map[string]runtime.Status
	ended   map[string]chan runtime.Exit
	deletes map[string]int
}

var (
	_ runtime.Driver      = (*exitDriver)(nil)
	_ runtime.ExitWatcher = (*exitDriver)(nil)
)

func newExitDriver() *exitDriver {
	return &exitDriver{state: map[string]runtime.Status{}, ended: map[string]chan runtime.Exit{}, deletes: map[string]int{}}
}

func (d *exitDriver) add(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.state[id] = runtime.StatusRunning
	d.ended[id] = make(chan runtime.Exit, 1)
}

// end makes the init of id end with ex, leaving the sandbox in state st.
func (d *exitDriver) end(id string, st runtime.Status, ex runtime.Exit) {
	d.mu.Lock()
	d.state[id] = st
	ch := d.ended[id]
	d.mu.Unlock()
	ch <- ex
}

func (d *exitDriver) Name() string { return "fake" }
func (d *exitDriver) Start(_ context.Context, s runtime.Spec) error {
	if s.NetNSWait != nil { // as a real driver does before it uses the namespace
		if _, err := s.NetNSWait(); err != nil {
			return err
		}
	}
	d.add(s.ID) // its init runs until deleted or ended
	return nil
}
func (d *exitDriver) List(context.Context) ([]string, error) { return nil, nil }
func (d *exitDriver) Stats(context.Context, string) (runtime.Stats, error) {
	return runtime.Stats{}, nil
}

func (d *exitDriver) Delete(_ context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.deletes[id]++
	if ch := d.ended[id]; ch != nil && d.state[id] == runtime.StatusRunning {
		ch <- runtime.Exit{Reason: runtime.ExitExited, Code: 137} // killed by the delete
	}
	delete(d.state, id)
	return nil
}

func (d *exitDriver) State(_ context.Context, id string) (runtime.Status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st, ok := d.state[id]
	if !ok {
		return "", runtime.ErrNotFound
	}
	return st, nil
}

func (d *exitDriver) Wait(ctx context.Context, id string) (runtime.Exit, error) {
	d.mu.Lock()
	ch := d.ended[id]
	d.mu.Unlock()
	if ch == nil {
		return runtime.Exit{}, runtime.ErrNotFound
	}
	select {
	case ex := <-ch:
		return ex, nil
	case <-ctx.Done():
		return runtime.Exit{}, ctx.Err()
	}
}

func (d *exitDriver) deleted(id string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.deletes[id]
}

type nopNetwork struct{}

func (nopNetwork) Setup(context.Context, string, bool) (string, error) { return "", nil }
func (nopNetwork) Teardown(context.Context, string) error              { return nil }

// changes records every sandbox change the store commits.
// changes records the store's changes once their transaction committed,
// so a test that sees one also reads its row.
type changes struct {
	mu      sync.Mutex
	pending []store.Change // recorded in a transaction not yet committed
	all     []store.Change
}

func (c *changes) RecordTx(_ context.Context, _ *sqldb.Tx, ch store.Change) error {
	c.mu.Lock()
	c.pending = append(c.pending, ch)
	c.mu.Unlock()
	return nil
}

func (c *changes) Committed() {
	c.mu.Lock()
	c.all = append(c.all, c.pending...)
	c.pending = nil
	c.mu.Unlock()
}

func (c *changes) killed(id string) []store.Change {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []store.Change
	for _, ch := range c.all {
		if ch.Type == EventKilled && ch.Sandbox.ID == id {
			out = append(out, ch)
		}
	}
	return out
}

func newExitManager(t *testing.T) (*Manager, *exitDriver, *changes) {
	t.Helper()
	rec := &changes{}
	st, err := sqlstore.Open(t.Context(), filepath.Join(t.TempDir(), "sbx.db"), rec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	drv := newExitDriver()
	m := New(Config{Data: datadir.Layout{Root: t.TempDir()}, AgentDir: t.TempDir()}, slog.New(slog.DiscardHandler), st, drv, nopNetwork{}, nil)
	return m, drv, rec
}

// trackNew stores a running sandbox and tracks it, as Create does.
func trackNew(t *testing.T, m *Manager, drv *exitDriver, id string) *live {
	t.Helper()
	now := time.Now().UTC()
	sb := store.Sandbox{ID: id, TeamID: "team", TemplateID: "base", State: store.StateRunning,
		StartedAt: now, EndAt: now.Add(time.Hour), ExecutionID: id}
	if err := m.store.InsertSandbox(t.Context(), sb, nil); err != nil {
		t.Fatal(err)
	}
	drv.add(id)
	l := &live{sb: sb, agent: newAgent(id, t.TempDir(), agentauth.Key{})}
	m.track(l)
	t.Cleanup(func() { l.timer.Stop() })
	return l
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// An init that ends on its own gets the sandbox recorded killed, once, with
// the runtime's reason and exit code, and freed.
func TestInitEndRecordsKill(t *testing.T) {
	t.Parallel()
	for _, reason := range []string{runtime.ExitOOM, runtime.ExitExited} {
		t.Run(reason, func(t *testing.T) {
			t.Parallel()
			m, drv, rec := newExitManager(t)
			trackNew(t, m, drv, "sb"+reason)
			drv.end("sb"+reason, runtime.StatusStopped, runtime.Exit{Reason: reason, Code: 137})
			waitFor(t, "the killed event and the delete", func() bool {
				return len(rec.killed("sb"+reason)) > 0 && drv.deleted("sb"+reason) > 0
			})
			sb, err := m.store.Sandbox(t.Context(), "sb"+reason)
			if err != nil || sb.State != store.StateKilled || sb.KillReason != reason {
				t.Fatalf("stored sandbox = %+v, %v; want killed with reason %s", sb, err, reason)
			}
			ev := rec.killed("sb" + reason)[0]
			if ev.Data["kill_reason"] != reason || ev.Data["exit_code"] != 137 {
				t.Errorf("killed event data = %v; want kill_reason %s, exit_code 137", ev.Data, reason)
			}
			if m.lookup("sb"+reason) != nil || drv.deleted("sb"+reason) != 1 {
				t.Errorf("sandbox still tracked (%v) or not deleted exactly once (%d)", m.lookup("sb"+reason) != nil, drv.deleted("sb"+reason))
			}
		})
	}
}

// The manager's own kill ends the init too: that end is not a second kill.
func TestOwnKillIsNotAnExit(t *testing.T) {
	t.Parallel()
	m, drv, rec := newExitManager(t)
	trackNew(t, m, drv, "sbkill")
	if err := m.kill(t.Context(), "sbkill", ReasonRequest); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the watcher see the end
	if got := rec.killed("sbkill"); len(got) != 1 || got[0].Data["kill_reason"] != ReasonRequest {
		t.Errorf("killed events = %v; want one, reason request", got)
	}
	if n := drv.deleted("sbkill"); n != 1 {
		t.Errorf("deleted %d times; want once", n)
	}
}

// A checkpoint to disk stops the init on purpose: the sandbox stays paused,
// and once restored its new init is watched.
func TestCheckpointIsNotAnExit(t *testing.T) {
	t.Parallel()
	m, drv, rec := newExitManager(t)
	l := trackNew(t, m, drv, "sbckpt")
	l.mu.Lock()
	l.sb.State = store.StatePaused
	l.mu.Unlock()
	drv.end("sbckpt", runtime.StatusCheckpointed, runtime.Exit{Reason: runtime.ExitExited, Code: 0})
	time.Sleep(50 * time.Millisecond)
	if got := rec.killed("sbckpt"); len(got) != 0 || m.lookup("sbckpt") == nil {
		t.Fatalf("a checkpointed sandbox was killed: %v", got)
	}
	// Restored: a new init runs and is watched again.
	drv.add("sbckpt")
	l.mu.Lock()
	l.sb.State = store.StateRunning
	l.mu.Unlock()
	m.watchExit(l)
	drv.end("sbckpt", runtime.StatusStopped, runtime.Exit{Reason: runtime.ExitOOM, Code: 137})
	waitFor(t, "the killed event of the restored sandbox", func() bool { return len(rec.killed("sbckpt")) == 1 })
}
