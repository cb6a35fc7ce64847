package store

import (
	"context"
	"errors"
	"time"
)

// Node states.
const (
	NodeReady = "ready"
	// NodeDraining is a node that heartbeats but takes no new sandboxes
	// (the admin's POST /nodes/{id} {"status": "draining"}): it keeps
	// running what it has, and is declared lost like a ready one when it
	// goes silent.
	NodeDraining = "draining"
	NodeLost     = "lost"
)

// ErrFenced is what a node's heartbeat returns once the node was declared
// lost while this same process (boot) ran: its sandboxes were recorded
// killed, so it must destroy them rather than go on running them.
var ErrFenced = errors.New("this node was declared lost: its sandboxes were recorded killed (node_lost)")

// Node is one server sharing the database.
type Node struct {
	ID          string // --node-name
	Boot        string // one process's run of the node: new at every start
	Address     string // where it listens
	State       string // NodeReady, NodeDraining or NodeLost; a heartbeat sends ready or draining
	StartedAt   time.Time
	HeartbeatAt time.Time
	LostAt      time.Time
	// NodeLoad is what api replicas place sandboxes by (cluster roles).
	NodeLoad
}

// NodeLoad is a node's address for api replicas and how full it is, as of
// its last heartbeat. CPU in millicores, memory in MiB; reserved is what
// its sandboxes hold. Zero capacity means the node did not say.
type NodeLoad struct {
	AdvertiseURL      string // where api replicas reach it (sbx serve --advertise-url)
	CPUMillis         int64
	MemoryMiB         int64
	ReservedCPUMillis int64
	ReservedMemoryMiB int64
	Sandboxes         int
	// Builds names the template builds whose layers the node holds,
	// space-separated (a string keeps NodeLoad comparable), at most
	// MaxNodeBuilds of them; entries with NodeSnapshotPrefix name the
	// sandbox snapshots it holds a copy of.
	Builds string
	// Pooled names the templates the node has ready pooled sandboxes of,
	// with how many: "TEMPLATE=COUNT ..." (see FormatPooled), at most
	// MaxNodePools of them. Placement prefers these nodes for a create
	// of the template: it claims a sandbox already started.
	Pooled string
}

// NodeSnapshotPrefix marks a sandbox snapshot among NodeLoad.Builds (one
// field, so the nodes table and the Leases carry it unchanged).
const NodeSnapshotPrefix = "snapshot:"

// MaxNodeBuilds bounds the builds a heartbeat names: placement prefers
// nodes holding a template's layers, and a node holding more than this
// many templates lists the most recently built.
const MaxNodeBuilds = 256

// Nodes is the registry of servers sharing the database and their
// heartbeats.
type Nodes interface {
	// Heartbeat records that n.Boot of node n.ID is alive at n.HeartbeatAt,
	// in state n.State when that is NodeDraining (ready otherwise).
	// A new boot (the node restarted) makes the node ready again; the boot
	// that was running when the node was declared lost gets ErrFenced.
	Heartbeat(ctx context.Context, n Node) error
	// Nodes lists every node, by ID.
	Nodes(ctx context.Context) ([]Node, error)
	// MarkLost declares lost, at now, every ready or draining node whose last
	// heartbeat is before staleBefore, and returns their IDs.
	MarkLost(ctx context.Context, staleBefore, now time.Time) ([]string, error)
	// LostNodes lists the IDs of nodes that are lost (their running
	// sandboxes may still need to be recorded killed).
	LostNodes(ctx context.Context) ([]string, error)
}

// BeatState is the state a heartbeat of n records: draining when the node
// says so, ready otherwise (a heartbeat never declares itself lost).
func BeatState(n Node) string {
	if n.State == NodeDraining {
		return NodeDraining
	}
	return NodeReady
}
