package sandbox

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
)

// beginNetwork is a fake Network that plugs its link in after Begin, as
// network.Manager does, and records what happened in which order.
type beginNetwork struct {
	attachErr error
	mu        sync.Mutex
	events    []string
}

func (n *beginNetwork) record(ev string) {
	n.mu.Lock()
	n.events = append(n.events, ev)
	n.mu.Unlock()
}

func (n *beginNetwork) log() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.events)
}

func (n *beginNetwork) Setup(context.Context, string, bool) (string, error) {
	n.record("setup")
	return "", n.attachErr
}

func (n *beginNetwork) Begin(_ context.Context, id string, _ bool) (string, func(context.Context) error, error) {
	n.record("begin " + id)
	return "", func(context.Context) error {
		time.Sleep(20 * time.Millisecond) // still plugging while the runtime starts
		n.record("attached " + id)
		return n.attachErr
	}, nil
}

func (n *beginNetwork) Teardown(_ context.Context, id string) error {
	n.record("teardown " + id)
	return nil
}

// A cold create plugs the link in while the runtime starts the sandbox,
// and returns it only once the link is in place.
func TestCreateWaitsForTheNetworkAttach(t *testing.T) {
	t.Parallel()
	net := &beginNetwork{}
	e := newLifecycleNet(t, newExitDriver(), net, nil)
	sb, err := e.m.Create(t.Context(), CreateRequest{TeamID: "t1", Template: "base"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"begin " + sb.ID, "attached " + sb.ID}
	if got := net.log(); !slices.Equal(got, want) {
		t.Errorf("network events at create = %v; want %v", got, want)
	}
}

// A link that fails to attach fails the create and leaves nothing: the
// container is deleted and the namespace torn down, after attach ended.
func TestCreateFailsWhenTheNetworkAttachFails(t *testing.T) {
	t.Parallel()
	net := &beginNetwork{attachErr: errors.New("veth refused")}
	e := newLifecycleNet(t, newExitDriver(), net, nil)
	_, err := e.m.Create(t.Context(), CreateRequest{TeamID: "t1", Template: "base"})
	if err == nil {
		t.Fatal("Create with a failing network attach succeeded")
	}
	ev := net.log()
	if len(ev) != 3 || !slices.Equal([]string{ev[0][:5], ev[1][:8], ev[2][:8]}, []string{"begin", "attached", "teardown"}) {
		t.Fatalf("network events = %v; want begin, attached, teardown", ev)
	}
	id := ev[0][len("begin "):]
	if n := e.drv.deleted(id); n == 0 {
		t.Errorf("container of %s not deleted", id)
	}
	if sbs, err := e.m.List(t.Context(), store.ListFilter{TeamID: "t1"}); err != nil || len(sbs) != 0 {
		t.Errorf("listed %v, %v; want no sandbox", sbs, err)
	}
}

// lateNetwork is a fake Network whose Begin gives path, or fails with
// err, only once the runtime has begun to start the sandbox (started is
// closed): a create that made the namespace before it started the
// runtime would see it fail.
type lateNetwork struct {
	beginNetwork
	path    string
	err     error
	started chan struct{}
}

func (n *lateNetwork) Begin(ctx context.Context, id string, allowInternet bool) (string, func(context.Context) error, error) {
	select {
	case <-n.started:
	case <-time.After(5 * time.Second):
		return "", nil, errors.New("the runtime did not start while the namespace was being made")
	}
	if n.err != nil {
		n.record("begin failed " + id)
		return "", nil, n.err
	}
	_, attach, _ := n.beginNetwork.Begin(ctx, id, allowInternet)
	return n.path, attach, nil
}

// startingDriver says when its Start is entered, before it waits for the
// namespace (runtime.Spec.NetNSWait), and what it was given.
type startingDriver struct {
	*exitDriver
	started chan struct{}
	once    sync.Once
	mu      sync.Mutex
	netns   map[string]string
	given   map[string]string // NetNS at Start, before the wait
	bg      map[string]bool   // Resources.Background at Start
}

func (d *startingDriver) Start(ctx context.Context, s runtime.Spec) error {
	d.once.Do(func() { close(d.started) })
	if d.given != nil {
		d.mu.Lock()
		d.given[s.ID] = s.NetNS
		d.mu.Unlock()
	}
	if s.NetNSWait != nil {
		p, err := s.NetNSWait()
		if err != nil {
			return err
		}
		d.mu.Lock()
		d.netns[s.ID] = p
		if d.bg != nil {
			d.bg[s.ID] = s.Resources.Background
		}
		d.mu.Unlock()
		s.NetNSWait = nil
	}
	return d.exitDriver.Start(ctx, s)
}

// A cold create makes the network namespace while the runtime prepares
// the sandbox, and the runtime, the stored sandbox and its saved spec
// all get the namespace's path; a namespace that cannot be made fails
// the create and leaves nothing behind.
func TestCreateMakesTheNamespaceWhileTheRuntimeStarts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"made", nil},
		{"fails", errors.New("no namespace today")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			started := make(chan struct{})
			net := &lateNetwork{path: "/run/fake-netns/x", err: tc.err, started: started}
			drv := &startingDriver{exitDriver: newExitDriver(), started: started, netns: map[string]string{}}
			e := newLifecycleNet(t, drv, net, nil)
			sb, err := e.m.Create(t.Context(), CreateRequest{TeamID: "t1", Template: "base"})
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Create = %v; want %v", err, tc.err)
				}
				ev := net.log()
				if len(ev) != 2 || !strings.HasPrefix(ev[0], "begin failed ") || !strings.HasPrefix(ev[1], "teardown ") {
					t.Fatalf("network events = %v; want begin failed, teardown", ev)
				}
				if sbs, err := e.m.List(t.Context(), store.ListFilter{TeamID: "t1"}); err != nil || len(sbs) != 0 {
					t.Errorf("listed %v, %v; want no sandbox", sbs, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := e.stored(t, sb.ID).NetNS; got != net.path {
				t.Errorf("stored NetNS = %q; want %q", got, net.path)
			}
			drv.mu.Lock()
			got := drv.netns[sb.ID]
			drv.mu.Unlock()
			if got != net.path {
				t.Errorf("runtime joined %q; want %q", got, net.path)
			}
			spec, err := e.m.loadSpec(t.Context(), sb)
			if err != nil || spec.NetNS != net.path {
				t.Errorf("saved spec NetNS = %q, %v; want %q", spec.NetNS, err, net.path)
			}
		})
	}
}

// startLate starts sb (its template, team and limits filled in) through
// startWith with a namespace made late at path, and gives the driver that
// saw the start, the manager's env and sb as started.
func startLate(t *testing.T, path string, sb store.Sandbox, how launch) (*startingDriver, *lifecycleEnv, store.Sandbox) {
	t.Helper()
	started := make(chan struct{})
	net := &lateNetwork{path: path, started: started}
	drv := &startingDriver{exitDriver: newExitDriver(), started: started,
		netns: map[string]string{}, given: map[string]string{}, bg: map[string]bool{}}
	e := newLifecycleNet(t, drv, net, nil)
	tpl, err := e.m.templates.Resolve(t.Context(), "base")
	if err != nil {
		t.Fatal(err)
	}
	sb.TemplateID, sb.TeamID, sb.AllowInternet, sb.CPUCount, sb.MemoryMB = tpl.ID, "t1", true, 1, 256
	if _, err := e.m.startWith(t.Context(), &sb, tpl, how); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.m.destroy(context.Background(), sb.ID) })
	return drv, e, sb
}

// A pool's sandbox starts in the background, but the spec saved for it
// (what a restore starts from) says foreground, as it did when the spec
// was saved before the start, and names the namespace made meanwhile.
func TestLateNamespaceSavedSpecStartsInTheForeground(t *testing.T) {
	t.Parallel()
	const path = "/run/fake-netns/bg"
	drv, e, sb := startLate(t, path, store.Sandbox{ID: "bgstart1"}, launch{background: true})
	drv.mu.Lock()
	bg := drv.bg[sb.ID]
	drv.mu.Unlock()
	if !bg {
		t.Error("the pool's start did not run in the background")
	}
	spec, err := e.m.loadSpec(t.Context(), sb)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Resources.Background || spec.NetNS != path {
		t.Errorf("saved spec: Background %v, NetNS %q; want false, %q", spec.Resources.Background, spec.NetNS, path)
	}
}

// A sandbox started again (a resume from disk, after a restart) carries
// the namespace path of its earlier start, which names a thread of an
// earlier server process: the runtime must get the new namespace's path
// only, never the stale one (the real driver refused it as missing, and a
// reused pid could make it name another namespace).
func TestLateNamespaceIgnoresAnEarlierStartsPath(t *testing.T) {
	t.Parallel()
	const path, stale = "/run/fake-netns/again", "/proc/1/task/1/root/n/again1"
	drv, _, sb := startLate(t, path, store.Sandbox{ID: "again1", NetNS: stale}, launch{})
	drv.mu.Lock()
	given, joined := drv.given[sb.ID], drv.netns[sb.ID]
	drv.mu.Unlock()
	if given != "" || joined != path || sb.NetNS != path {
		t.Errorf("runtime given NetNS %q then %q, sandbox %q; want \"\", then %q for both", given, joined, sb.NetNS, path)
	}
}
