package store

import (
	"context"
	"errors"
	"time"
)

// Owners of published layer stacks.
const (
	LayerOwnerBuild   = "build"   // a template build's layers, topmost first
	LayerOwnerSandbox = "sandbox" // a paused sandbox's own layers, above its build's
)

// LayerRef is one layer of a stack in the blob store.
type LayerRef struct {
	// Digest names the layer's blob ("sha256:..."); "" for a layer every
	// node prepares itself (a built-in template's root filesystem from
	// the machine's rootfs cache), found by Path.
	Digest string
	Size   int64
	// Path is where the publishing node keeps the layer: on that node it
	// needs no pull; elsewhere only a layer without digest is read there.
	Path string
}

// Layers records which blobs make up the layer stacks of template builds
// and of sandboxes paused to the blob store, so any node sharing the
// database and the store can pull them.
type Layers interface {
	// SetLayers replaces the stack of (kind, id).
	SetLayers(ctx context.Context, kind, id string, layers []LayerRef, now time.Time) error
	// Layers returns the stack of (kind, id), topmost first; empty when
	// none was published.
	Layers(ctx context.Context, kind, id string) ([]LayerRef, error)
	// DeleteLayers forgets the stack of (kind, id).
	DeleteLayers(ctx context.Context, kind, id string) error
	// LayerDigests lists every digest some stack references (what a
	// garbage collection of the blob store must keep).
	LayerDigests(ctx context.Context) ([]string, error)
	// KeptLayerDigests lists every digest a stack still in use references:
	// the stacks of sandboxes not recorded killed (a sandbox killed where
	// its node could not forget them: the node was lost), and those of builds that are a
	// template's current build, tagged, a not-killed sandbox's build,
	// unfinished, or finished at or after recent (a create may have
	// resolved it just before a rebuild replaced it). The stacks of other
	// builds (deleted templates', replaced builds') are garbage.
	KeptLayerDigests(ctx context.Context, recent time.Time) ([]string, error)
	// MoveSandbox hands a paused sandbox from node from to node to. It
	// fails with errdefs.ErrConflict unless the sandbox is paused and
	// still from's: two nodes resuming it at once cannot both win.
	MoveSandbox(ctx context.Context, id, from, to string) error
}

// ErrMoved is wrapped by a write of a sandbox row from a node that no
// longer owns it (another node resumed it from the blob store): the
// writer must drop its copy of the sandbox.
var ErrMoved = errors.New("the sandbox moved to another node")
