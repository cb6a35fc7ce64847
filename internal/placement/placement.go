// Package placement decides which node of a cluster runs a new sandbox.
//
// The decision reads a snapshot of the nodes (capacity, what is reserved,
// what each holds locally) through NodeSource, filters the nodes the
// request can run on, prefers the nodes where it starts fastest (a pooled
// sandbox of the template, then its snapshot, then its layers), and among
// those picks the freest of K sampled at random ("power of K choices"):
// sampling instead of always taking the single freest node keeps several
// API replicas, each deciding from the same slightly stale snapshot, from
// all piling onto the same node.
//
// A Placer also keeps the decisions it has made but the nodes have not yet
// reported (in-memory reservations), so concurrent decisions in one
// replica see each other. When nothing fits, Place returns a *NoFitError
// that says why, per reason, so the user gets more than "failed to place
// sandbox".
package placement

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// State is a node's scheduling state as the cluster sees it.
type State string

const (
	// Ready nodes take new sandboxes.
	Ready State = "ready"
	// Draining nodes keep running what they have but take nothing new
	// (an operator drain, a rolling upgrade).
	Draining State = "draining"
	// Unhealthy nodes missed their heartbeat or reported a fault.
	Unhealthy State = "unhealthy"
)

// Node is one node's state in a snapshot. Capacity and reservations are in
// the units the sandboxes ask for: CPU in millicores, memory in MiB.
type Node struct {
	ID    string
	State State
	// Observed is when the node produced these figures (its heartbeat),
	// on a clock comparable with the Placer's Config.Now: the node's own
	// (NTP-synced) clock, or the database's now() for both. Not when the
	// API replica read the row: a reservation released after the node
	// measured but before the replica read would stop counting too
	// early. A reservation released before Observed is in the node's
	// own figures; see Reservation.Release. Zero means unknown.
	Observed time.Time

	CPUMillis         int64 // capacity
	MemoryMiB         int64 // capacity
	ReservedCPUMillis int64 // held by the node's sandboxes (running, paused in memory, pooled)
	ReservedMemoryMiB int64
	Sandboxes         int // sandboxes on the node
	MaxSandboxes      int // density limit; 0 means none

	// What the node holds locally, as sets. Layers are keyed by build
	// (layer) digest, Snapshots by snapshot id, Pooled by template id with
	// the number of ready pooled sandboxes. Nil maps are empty sets.
	Layers    map[string]struct{}
	Snapshots map[string]struct{}
	Pooled    map[string]int
}

// Request is what one sandbox needs.
type Request struct {
	// Team is who asks; carried into errors and logs. It does not change
	// the choice today (a per-team spread would use it).
	Team       string
	TemplateID string
	// BuildDigest names the template build's layers; nodes holding them
	// start the sandbox without a pull.
	BuildDigest string
	// SnapshotID, when set, is the memory/disk snapshot to start from (a
	// template snapshot or a paused sandbox's checkpoint).
	SnapshotID string
	// SnapshotInBlobStore says the snapshot can be pulled by any node.
	// Without it a snapshot exists only on the nodes that hold it, and
	// only those can take the request.
	SnapshotInBlobStore bool

	// NoPool says the sandbox cannot be a pooled one (pooled sandboxes
	// have outbound access; a create without it starts fresh), so pools
	// do not attract it.
	NoPool bool

	CPUMillis int64
	MemoryMiB int64

	// Exclude names nodes an earlier attempt of this request failed on.
	Exclude []string

	// Node, when set, is the only node that can take the request: it
	// holds data that does not move (the volumes the sandbox mounts).
	// PinnedBy says what, for the error when that node cannot.
	Node     string
	PinnedBy string
}

// Validate checks what the placement depends on.
func (r *Request) Validate() error {
	switch {
	case r.CPUMillis <= 0:
		return fmt.Errorf("%w: cpu must be positive (got %d millicores)", ErrInvalidRequest, r.CPUMillis)
	case r.MemoryMiB <= 0:
		return fmt.Errorf("%w: memory must be positive (got %d MiB)", ErrInvalidRequest, r.MemoryMiB)
	case r.TemplateID == "" && r.SnapshotID == "":
		return fmt.Errorf("%w: a template or a snapshot is required", ErrInvalidRequest)
	}
	return nil
}

// ErrInvalidRequest is returned (wrapped) for a request that could never be
// placed whatever the cluster looked like.
var ErrInvalidRequest = errors.New("invalid placement request")

// Affinity says why the chosen node was preferred.
type Affinity int

const (
	// AffinityNone: the node had room, nothing more.
	AffinityNone Affinity = iota
	// AffinityLayers: the node holds the template build's layers.
	AffinityLayers
	// AffinitySnapshot: the node holds the requested snapshot.
	AffinitySnapshot
	// AffinityPool: the node has a pooled sandbox of the template ready.
	AffinityPool
)

func (a Affinity) String() string {
	switch a {
	case AffinityPool:
		return "pool"
	case AffinitySnapshot:
		return "snapshot"
	case AffinityLayers:
		return "layers"
	default:
		return "none"
	}
}

// Decision is where a request goes.
type Decision struct {
	NodeID   string
	Affinity Affinity
	// Candidates is how many nodes could have taken the request at the
	// chosen affinity; Sampled how many of them were compared.
	Candidates int
	Sampled    int
	// Reservation holds the request's resources on the node until the
	// caller releases it; see Reservation.Release.
	Reservation *Reservation
}

// NodeSource gives the current snapshot of the cluster's nodes. The real
// one reads node rows and heartbeats from the database and refreshes them
// in the background; Place calls it once per decision, so it must be
// cheap (a cached slice, not a query). The returned slice and the maps in
// it are shared: callers must not modify them.
type NodeSource interface {
	Nodes(ctx context.Context) ([]Node, error)
}
