package liveness

import "github.com/sbxdev/sbx/internal/store"

// SetLoad makes every heartbeat carry load(): where api replicas reach the
// node and how full it is (cluster roles place sandboxes by it). Call
// before Run.
func (b *Beater) SetLoad(load func() store.NodeLoad) { b.load = load }

// SetDraining makes every heartbeat say whether the node drains (the
// admin's POST /nodes/{id}): api replicas then place nothing new on it.
// Call before Run.
func (b *Beater) SetDraining(draining func() bool) { b.draining = draining }
