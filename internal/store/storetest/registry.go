package storetest

import (
	"testing"

	"github.com/sbxdev/sbx/internal/store"
)

// RunNodeRegistry runs the heartbeat and loss cases of RunNodes on a node
// registry kept outside the database (Kubernetes Leases, in
// internal/liveness), which must behave as the database's does.
func RunNodeRegistry(t *testing.T, newRegistry func(t *testing.T) store.Nodes) {
	t.Run("HeartbeatAndLost", func(t *testing.T) { testNodesLost(t, newRegistry(t)) })
	t.Run("Load", func(t *testing.T) { testNodeLoad(t, newRegistry(t)) })
	t.Run("Draining", func(t *testing.T) { testNodeDraining(t, newRegistry(t)) })
}
