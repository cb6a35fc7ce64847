package layer

import (
	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/store"
)

// Blobs is what publishing and pulling layer stacks needs, for template
// builds and for sandboxes paused to the store alike: the blob store, this
// node's Puller (through its blob.Cache) and the database's record of
// each stack's digests.
type Blobs struct {
	Store  blob.Store
	Puller *Puller
	Layers store.Layers
}
