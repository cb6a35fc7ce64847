package sandbox

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

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
