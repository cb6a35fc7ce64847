package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/agentauth"
	"github.com/sbxdev/sbx/internal/datadir"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
	"github.com/sbxdev/sbx/internal/template"
)

// The lifecycle without root: the manager's create, kill and timeouts run
// for real (store, timers, quota, teardown) against a fake runtime driver
// (exitDriver) and fake agents, the two boundaries that need a kernel.

// fakeAgents hands out fakeAgent conns and remembers them by sandbox.
type fakeAgents struct {
	mu      sync.Mutex
	byID    map[string]*fakeAgent
	initErr error // what every /init answers
}

func (f *fakeAgents) dial(id, runDir string, key agentauth.Key) agentConn {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := &fakeAgent{key: key, initErr: f.initErr}
	f.byID[id] = a
	return a
}

func (f *fakeAgents) of(id string) *fakeAgent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byID[id]
}

// fakeAgent is an envd that answers at once and records what it was told.
type fakeAgent struct {
	mu      sync.Mutex
	key     agentauth.Key
	initErr error
	inits   []initRequest
	started []string
	closed  int
}

func (a *fakeAgent) waitReady(context.Context) error { return nil }
func (a *fakeAgent) init(_ context.Context, r initRequest) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inits = append(a.inits, r)
	return a.initErr
}
func (a *fakeAgent) rekey(ctx context.Context, r initRequest, _ agentauth.Key) error {
	return a.init(ctx, r)
}
func (a *fakeAgent) currentKey() agentauth.Key { return a.key }
func (a *fakeAgent) start(_ context.Context, _, _, _, cmd string, _ func(string, string)) (startedCmd, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.started = append(a.started, cmd)
	return runningCmd{}, nil
}
func (a *fakeAgent) waitPort(context.Context, string, int) error                       { return nil }
func (a *fakeAgent) waitCommand(context.Context, string, string, string, string) error { return nil }
func (a *fakeAgent) roundTripper() http.RoundTripper                                   { return http.DefaultTransport }
func (a *fakeAgent) close() {
	a.mu.Lock()
	a.closed++
	a.mu.Unlock()
}

// runningCmd is a start command that runs until the test ends.
type runningCmd struct{}

func (runningCmd) end(ctx context.Context) startEnd {
	<-ctx.Done()
	return startEnd{code: -1, err: ctx.Err()}
}
func (runningCmd) disconnect() {}

// oneTemplate resolves every ref to tpl.
type oneTemplate struct{ tpl template.Template }

func (o oneTemplate) Resolve(context.Context, string) (template.Template, error) { return o.tpl, nil }
func (o oneTemplate) ResolveFor(_ context.Context, _, ref string) (template.Template, error) {
	if ref != o.tpl.ID {
		return template.Template{}, errdefs.NotFound("template %s not found", ref)
	}
	return o.tpl, nil
}

type lifecycleEnv struct {
	m      *Manager
	drv    lifecycleDriver
	agents *fakeAgents
	rec    *changes
	data   datadir.Layout
}

func newLifecycle(t *testing.T, initErr error, opts ...Option) *lifecycleEnv {
	t.Helper()
	return newLifecycleWith(t, newExitDriver(), initErr, opts...)
}

// lifecycleDriver is a fake runtime driver the test can inspect.
type lifecycleDriver interface {
	runtime.Driver
	deleted(id string) int
}

func newLifecycleWith(t *testing.T, drv lifecycleDriver, initErr error, opts ...Option) *lifecycleEnv {
	t.Helper()
	return newLifecycleNet(t, drv, nopNetwork{}, initErr, opts...)
}

func newLifecycleNet(t *testing.T, drv lifecycleDriver, net Network, initErr error, opts ...Option) *lifecycleEnv {
	t.Helper()
	rec := &changes{}
	st, err := sqlstore.Open(t.Context(), filepath.Join(t.TempDir(), "sbx.db"), rec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &lifecycleEnv{drv: drv, agents: &fakeAgents{byID: map[string]*fakeAgent{}, initErr: initErr},
		rec: rec, data: datadir.Layout{Root: t.TempDir()}}
	tpl := template.Template{ID: "base", Names: []string{"base"}, Rootfs: "/nonexistent", CPUCount: 1, MemoryMB: 256,
		Env: map[string]string{"FROM_TPL": "1"}, StartCmd: "serve"}
	e.m = New(Config{Data: e.data, AgentDir: t.TempDir(), NodeID: "n1"}, slog.New(slog.DiscardHandler), st, e.drv,
		net, oneTemplate{tpl}, opts...)
	e.m.dial = e.agents.dial
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.m.Close(ctx)
	})
	return e
}

func (e *lifecycleEnv) stored(t *testing.T, id string) store.Sandbox {
	t.Helper()
	sb, err := e.m.store.Sandbox(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return sb
}

// Create starts the sandbox, initialises its agent with the caller's env
// and token, runs the start command and records it; Kill records the
// kill, makes it unreachable and tears it down.
func TestCreateAndKill(t *testing.T) {
	t.Parallel()
	e := newLifecycle(t, nil)
	sb, err := e.m.Create(t.Context(), CreateRequest{TeamID: "t1", Template: "base", Secure: true,
		EnvVars: map[string]string{"MINE": "x"}, Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.stored(t, sb.ID); got.State != store.StateRunning || got.NodeID != "n1" || got.TeamID != "t1" {
		t.Fatalf("stored %+v; want running on n1 for t1", got)
	}
	a := e.agents.of(sb.ID)
	if a == nil || len(a.inits) != 1 {
		t.Fatalf("agent inits = %v; want one", a)
	}
	init := a.inits[0]
	if init.AccessToken == "" || init.AccessToken != sb.AccessToken {
		t.Errorf("init token %q, sandbox's %q: a secure sandbox's agent gets its token", init.AccessToken, sb.AccessToken)
	}
	if init.EnvVars["MINE"] != "x" || init.EnvVars["FROM_TPL"] != "1" || init.EnvVars["E2B_SANDBOX_ID"] != sb.ID {
		t.Errorf("init env %v; want the caller's, the template's and E2B_SANDBOX_ID", init.EnvVars)
	}
	if fmt.Sprint(a.started) != "[serve]" {
		t.Errorf("started %v; want the template's start command", a.started)
	}
	if _, ok := e.m.Route(sb.ID); !ok {
		t.Error("a running sandbox has no route")
	}
	if err := e.m.Kill(t.Context(), "t2", sb.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("another team's kill = %v; want not found", err)
	}
	if err := e.m.Kill(t.Context(), "t1", sb.ID); err != nil {
		t.Fatal(err)
	}
	e.m.WaitReclaimed()
	if got := e.stored(t, sb.ID); got.State != store.StateKilled || got.KillReason != ReasonRequest {
		t.Errorf("stored %s (%s) after kill; want killed, request", got.State, got.KillReason)
	}
	if _, ok := e.m.Route(sb.ID); ok || e.m.lookup(sb.ID) != nil {
		t.Error("a killed sandbox is still reachable")
	}
	if n := e.drv.deleted(sb.ID); n != 1 {
		t.Errorf("container deleted %d times; want once", n)
	}
	if _, err := os.Stat(e.data.SandboxRun(sb.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run dir left after kill: %v", err)
	}
	if err := e.m.Kill(t.Context(), "t1", sb.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("second kill = %v; want not found", err)
	}
}

// A create whose agent fails /init leaves nothing: no row, no container,
// no run dir, and its slot of the team cap is free again.
func TestCreateFailureLeavesNothing(t *testing.T) {
	t.Parallel()
	e := newLifecycle(t, fmt.Errorf("envd /init: %w", ErrAgentUnproven), WithTeamCap(1, nil))
	_, err := e.m.Create(t.Context(), CreateRequest{TeamID: "t1", Template: "base"})
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("Create with an unproven agent = %v; want a failed precondition", err)
	}
	sbs, err := e.m.List(t.Context(), store.ListFilter{TeamID: "t1"})
	if err != nil || len(sbs) != 0 {
		t.Errorf("listed %v, %v; want no sandbox", sbs, err)
	}
	if e.m.Running() != 0 {
		t.Errorf("%d sandboxes tracked; want 0", e.m.Running())
	}
	e.agents.mu.Lock()
	var ids []string
	for id := range e.agents.byID {
		ids = append(ids, id)
	}
	e.agents.initErr = nil
	e.agents.mu.Unlock()
	for _, id := range ids {
		if n := e.drv.deleted(id); n == 0 {
			t.Errorf("container of %s not deleted", id)
		}
		if _, err := os.Stat(e.data.SandboxRun(id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("run dir of %s left: %v", id, err)
		}
	}
	// The failed create's slot was given back: the cap of 1 admits one.
	if _, err := e.m.Create(t.Context(), CreateRequest{TeamID: "t1", Template: "base"}); err != nil {
		t.Fatalf("Create after a failed one under a cap of 1: %v", err)
	}
	if _, err := e.m.Create(t.Context(), CreateRequest{TeamID: "t1", Template: "base"}); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("second Create under a cap of 1 = %v; want resource exhausted", err)
	}
}

// A sandbox whose time is up is killed with reason timeout, also when
// its timeout was shortened; a timer that fires after the timeout was
// extended kills nothing.
func TestTimeoutKills(t *testing.T) {
	t.Parallel()
	t.Run("expires", func(t *testing.T) {
		t.Parallel()
		e := newLifecycle(t, nil)
		sb, err := e.m.Create(t.Context(), CreateRequest{TeamID: "t1", Template: "base", Timeout: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		e.waitTimeoutKill(t, sb.ID)
	})
	t.Run("shortened", func(t *testing.T) {
		t.Parallel()
		e := newLifecycle(t, nil)
		sb, err := e.m.Create(t.Context(), CreateRequest{TeamID: "t1", Template: "base", Timeout: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.m.SetTimeout(t.Context(), "t1", sb.ID, 10*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		e.waitTimeoutKill(t, sb.ID)
	})
	t.Run("extended", func(t *testing.T) {
		t.Parallel()
		e := newLifecycle(t, nil)
		sb, err := e.m.Create(t.Context(), CreateRequest{TeamID: "t1", Template: "base", Timeout: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.m.SetTimeout(t.Context(), "t1", sb.ID, time.Hour); err != nil {
			t.Fatal(err)
		}
		e.m.expire(sb.ID) // the old timer firing late, after the move
		if got := e.stored(t, sb.ID); got.State != store.StateRunning || e.m.lookup(sb.ID) == nil {
			t.Fatalf("extended sandbox is %s (%s); want running", got.State, got.KillReason)
		}
	})
}

func (e *lifecycleEnv) waitTimeoutKill(t *testing.T, id string) {
	t.Helper()
	// The change is recorded inside the kill's transaction, before it
	// commits; the container's delete comes after the commit.
	waitFor(t, "the timeout kill", func() bool { return len(e.rec.killed(id)) > 0 && e.drv.deleted(id) > 0 })
	if got := e.stored(t, id); got.KillReason != ReasonTimeout {
		t.Errorf("kill reason %q; want %q", got.KillReason, ReasonTimeout)
	}
	e.m.WaitReclaimed()
	if n := e.drv.deleted(id); n != 1 {
		t.Errorf("container deleted %d times; want once", n)
	}
}
