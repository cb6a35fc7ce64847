package sandbox

import (
	"context"
	"time"
)

// netStart is a sandbox's network being made: the namespace (Begin's
// path and error, set before begun closes) and then its link (attached
// gets attach's error, or Begin's, exactly once).
type netStart struct {
	late     bool // the namespace is made concurrently with the caller
	begun    chan struct{}
	path     string
	err      error
	took     time.Duration // Begin's, when late
	attached chan error
}

// nsPath waits for the namespace and gives its path.
func (n *netStart) nsPath() (string, error) {
	<-n.begun
	return n.path, n.err
}

// beginNetwork makes the sandbox's network namespace and, with overlap,
// makes it in the background and plugs the rest of its network in
// concurrently with the caller (otherwise all of it before it returns).
func (m *Manager) beginNetwork(ctx context.Context, id string, allowInternet, overlap bool) *netStart {
	n := &netStart{begun: make(chan struct{}), attached: make(chan error, 1)}
	b, ok := m.network.(networkBeginner)
	if !ok || !overlap {
		n.path, n.err = m.network.Setup(ctx, id, allowInternet)
		close(n.begun)
		n.attached <- n.err
		return n
	}
	n.late = true
	go func() {
		var attach func(context.Context) error
		t0 := time.Now()
		n.path, attach, n.err = b.Begin(ctx, id, allowInternet)
		n.took = time.Since(t0)
		close(n.begun)
		if n.err != nil {
			n.attached <- n.err
			return
		}
		n.attached <- attach(context.WithoutCancel(ctx))
	}()
	return n
}
