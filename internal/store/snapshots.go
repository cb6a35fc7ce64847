package store

import (
	"context"
	"time"
)

// LayerOwnerSnapshot owns a sandbox snapshot's own layers in the layer
// stacks (store.Layers), so everything that walks the stacks (a garbage
// collection of the blob store) sees them.
const LayerOwnerSnapshot = "snapshot"

// Snapshot is one sandbox snapshot (POST /sandboxes/{id}/snapshots): a
// team's image of a sandbox that sandboxes start from as a private
// template. Any server sharing the database lists, names and deletes it;
// its own layers are in the blob store, so any node can start it, except
// a memory snapshot, whose checkpoint image stays on MemoryNode.
type Snapshot struct {
	ID        string
	TeamID    string
	Name      string // "" = reachable by ID only; unique among all teams' snapshots
	SandboxID string // the sandbox it was taken from
	// BaseTemplate and BuildID name the template build under its own
	// layers (what a node resolves, and pulls, to start it).
	BaseTemplate string
	BuildID      string
	// Template is what sandboxes started from it run as (JSON of
	// template.Template: start command, user, resources), opaque here.
	Template []byte
	// Layers are its own layers, topmost first, above the build's.
	Layers []LayerRef
	// MemoryNode names the node holding its checkpoint image when it has
	// processes and memory too; "" for a filesystem snapshot.
	MemoryNode string
	SizeBytes  int64
	CreatedAt  time.Time
}

// Snapshots is the table of sandbox snapshots.
type Snapshots interface {
	// PutSnapshot records a snapshot, replacing the one with its ID (new
	// content for a named snapshot) together with its layer stack. A name
	// another snapshot holds is errdefs.ErrAlreadyExists.
	PutSnapshot(ctx context.Context, s Snapshot) error
	// Snapshot reads one by ID (errdefs.ErrNotFound), with its layers.
	Snapshot(ctx context.Context, id string) (Snapshot, error)
	// SnapshotByName reads one by name (errdefs.ErrNotFound), any team's.
	SnapshotByName(ctx context.Context, name string) (Snapshot, error)
	// ListSnapshots lists a team's snapshots ("" = every team's), newest
	// first, without their layers.
	ListSnapshots(ctx context.Context, teamID string) ([]Snapshot, error)
	// DeleteSnapshot removes a team's snapshot and its layer stack
	// (errdefs.ErrNotFound when the team has none with that ID).
	DeleteSnapshot(ctx context.Context, teamID, id string) error
}
