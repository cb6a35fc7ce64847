package cluster

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/periodic"
	"github.com/sbxdev/sbx/internal/placement"
	"github.com/sbxdev/sbx/internal/store"
)

// NodeLister reads the node rows (store.Nodes).
type NodeLister interface {
	Nodes(ctx context.Context) ([]store.Node, error)
}

// Nodes is an api replica's view of the nodes: their rows, read in the
// background every RefreshEvery into a placement.Cached, so neither a
// placement decision nor a routing lookup queries the database.
type Nodes struct {
	repo  NodeLister
	stale time.Duration // a node silent this long takes nothing new
	log   *slog.Logger
	now   func() time.Time

	cache   placement.Cached
	urls    atomic.Pointer[map[string]string] // node ID → advertise URL
	rows    atomic.Pointer[[]store.Node]      // as last read, for the admin's views
	refresh sync.Mutex
	lastAt  atomic.Int64 // Unix ns of the last successful refresh
}

// RefreshEvery is how often the node rows are read (nodes heartbeat every
// second).
const RefreshEvery = time.Second

// NewNodes returns the view; stale is how long a node may go without a
// heartbeat before it is no longer placed on (well below the grace after
// which it is declared lost: a few missed beats).
func NewNodes(repo NodeLister, stale time.Duration, log *slog.Logger) *Nodes {
	n := &Nodes{repo: repo, stale: stale, log: log, now: time.Now}
	empty := map[string]string{}
	n.urls.Store(&empty)
	n.rows.Store(&[]store.Node{})
	return n
}

// Nodes is the placement.NodeSource. An empty view is read again first
// (at most every 100 ms): the first nodes of a cluster that just started
// take creates at once, not a refresh later.
func (n *Nodes) Nodes(ctx context.Context) ([]placement.Node, error) {
	nodes, err := n.cache.Nodes(ctx)
	if len(nodes) == 0 && time.Duration(n.now().UnixNano()-n.lastAt.Load()) > 100*time.Millisecond {
		if err := n.Refresh(ctx); err != nil {
			return nil, err
		}
		return n.cache.Nodes(ctx)
	}
	return nodes, err
}

// Refresh reads the rows once.
func (n *Nodes) Refresh(ctx context.Context) error {
	n.refresh.Lock()
	defer n.refresh.Unlock()
	rows, err := n.repo.Nodes(ctx)
	if err != nil {
		return err
	}
	now := n.now()
	nodes := make([]placement.Node, 0, len(rows))
	urls := make(map[string]string, len(rows))
	for _, r := range rows {
		if !offered(r) || r.CPUMillis <= 0 || r.MemoryMiB <= 0 {
			continue // not a --role node (a --role all server, or an old one): not reachable with a signature
		}
		urls[r.ID] = r.AdvertiseURL
		st := placement.Ready
		switch {
		case r.State == store.NodeLost || now.Sub(r.HeartbeatAt) > n.stale:
			st = placement.Unhealthy
		case r.State == store.NodeDraining:
			st = placement.Draining // the admin drains it: nothing new goes there
		case r.State != store.NodeReady:
			st = placement.Unhealthy
		}
		// Keyed by build: Sandboxes.Create asks by the template's current
		// build; entries with NodeSnapshotPrefix name sandbox snapshots the
		// node holds copies of. Both sets are bounded: a Lease annotation
		// may hold anything.
		layers := store.ParseBuilds(r.Builds)
		var snaps map[string]struct{}
		for id := range layers {
			if snap, ok := strings.CutPrefix(id, store.NodeSnapshotPrefix); ok {
				if snaps == nil {
					snaps = map[string]struct{}{}
				}
				snaps[snap] = struct{}{}
				delete(layers, id)
			}
		}
		nodes = append(nodes, placement.Node{ID: r.ID, State: st, Observed: r.HeartbeatAt,
			CPUMillis: r.CPUMillis, MemoryMiB: r.MemoryMiB, ReservedCPUMillis: r.ReservedCPUMillis,
			ReservedMemoryMiB: r.ReservedMemoryMiB, Sandboxes: r.Sandboxes, Layers: layers, Snapshots: snaps,
			Pooled: store.ParsePooled(r.Pooled)})
	}
	n.cache.Set(nodes)
	n.urls.Store(&urls)
	n.rows.Store(&rows)
	n.lastAt.Store(now.UnixNano())
	return nil
}

// offered tells whether node r takes sandboxes from api replicas: a --role
// node whose API serves (it then heartbeats its address and capacity).
func offered(r store.Node) bool {
	return r.AdvertiseURL != "" && r.CPUMillis > 0 && r.MemoryMiB > 0
}

// Run refreshes until ctx ends.
func (n *Nodes) Run(ctx context.Context) error {
	periodic.Run(ctx, RefreshEvery, n.Refresh, n.log, "read the nodes from the database; placing from the last view")
	return nil
}

// URL returns where node id is reached. An unknown node is read again
// once (it may have joined since the last refresh).
func (n *Nodes) URL(ctx context.Context, id string) (string, error) {
	if u, ok := (*n.urls.Load())[id]; ok {
		return u, nil
	}
	if time.Duration(n.now().UnixNano()-n.lastAt.Load()) > 100*time.Millisecond {
		if err := n.Refresh(ctx); err != nil {
			return "", errdefs.Unavailable("read the nodes: %v", err)
		}
		if u, ok := (*n.urls.Load())[id]; ok {
			return u, nil
		}
	}
	if id == "" {
		return "", errdefs.Unavailable("the sandbox has no node recorded")
	}
	return "", errdefs.Unavailable("node %s, which runs the sandbox, is not a known --role node (no advertise URL in its heartbeat)", id)
}

// Ready reports whether node id heartbeats and takes work, as of the last
// refresh.
func (n *Nodes) Ready(id string) bool {
	nodes, _ := n.cache.Nodes(context.Background())
	for _, x := range nodes {
		if x.ID == id {
			return x.State == placement.Ready
		}
	}
	return false
}
