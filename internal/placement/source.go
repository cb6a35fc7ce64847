package placement

import (
	"context"
	"sync/atomic"
)

// Cached is a NodeSource holding the latest snapshot, replaced whole by
// Set. It is the shape the database-backed source will take (a refresher
// reads node rows and heartbeats and calls Set), and what tests and the
// single-box role use directly.
type Cached struct {
	v atomic.Pointer[[]Node]
}

// Set replaces the snapshot. The caller must not modify nodes afterwards:
// decisions read it without copying.
func (c *Cached) Set(nodes []Node) { c.v.Store(&nodes) }

// Nodes returns the latest snapshot (empty before the first Set).
func (c *Cached) Nodes(context.Context) ([]Node, error) {
	if p := c.v.Load(); p != nil {
		return *p, nil
	}
	return nil, nil
}
