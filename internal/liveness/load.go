package liveness

import (
	"context"
	"fmt"

	"github.com/sbxdev/sbx/internal/store"
)

// SetLoad makes every heartbeat carry load(): where api replicas reach the
// node and how full it is (cluster roles place sandboxes by it). Call
// before Run.
func (b *Beater) SetLoad(load func() store.NodeLoad) { b.load = load }

// SetDraining makes every heartbeat say whether the node drains (the
// admin's POST /nodes/{id}): api replicas then place nothing new on it.
// Call before Run.
func (b *Beater) SetDraining(draining func() bool) { b.draining = draining }

// WasDraining reports whether the registry holds this node as draining:
// the admin drained it before this process started (a restart for an
// upgrade, say). Read before the first heartbeat, which would otherwise
// record the new boot ready and let sandboxes be placed on it again.
func (b *Beater) WasDraining(ctx context.Context) (bool, error) {
	nodes, err := b.repo.Nodes(ctx)
	if err != nil {
		return false, fmt.Errorf("read the state of node %s: %w", b.node.ID, err)
	}
	for _, n := range nodes {
		if n.ID == b.node.ID {
			return n.State == store.NodeDraining, nil
		}
	}
	return false, nil
}
