package api

import (
	"context"
	"strings"
	"sync"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// snapshotCap bounds each team's sandbox snapshots: each one keeps a copy
// of a sandbox's writable layer on the server's disk, so without a cap a
// team's key could fill the disk by snapshotting in a loop. The count is
// the shared table's (every node's snapshots of the team). Checks and
// creates of one team are serialised in this process so concurrent
// requests cannot both take the last place; two nodes taking a team's
// snapshots at the same instant can each take it (one over the cap).
type snapshotCap struct {
	max   int // 0 = no cap
	mu    sync.Mutex
	teams map[string]*sync.Mutex
}

// SetSnapshotCap sets the per-team cap on snapshots (0 = none).
func (s *Server) SetSnapshotCap(max int) { s.snapCap.max = max }

// admit returns once the team may create a snapshot named name ("" = a
// new unnamed one), holding the team's lock until unlock is called.
// Replacing the content of an existing named snapshot adds none.
func (c *snapshotCap) admit(ctx context.Context, teamID, name string, sn snapshotLister) (unlock func(), err error) {
	if c.max <= 0 {
		return func() {}, nil
	}
	c.mu.Lock()
	if c.teams == nil {
		c.teams = map[string]*sync.Mutex{}
	}
	l := c.teams[teamID]
	if l == nil {
		l = &sync.Mutex{}
		c.teams[teamID] = l
	}
	c.mu.Unlock()
	l.Lock()
	// As CreateSnapshot reads it: case-insensitive, ":default" optional.
	name = strings.TrimSuffix(strings.ToLower(name), ":default")
	if name != "" {
		same, err := sn.ListSnapshots(ctx, teamID, "", name)
		if err != nil {
			l.Unlock()
			return nil, err
		}
		if len(same) > 0 {
			return l.Unlock, nil
		}
	}
	all, err := sn.ListSnapshots(ctx, teamID, "", "")
	if err != nil {
		l.Unlock()
		return nil, err
	}
	if n := len(all); n >= c.max {
		l.Unlock()
		return nil, errdefs.Exhausted("team snapshot limit reached: the team has %d snapshots and may have %d; "+
			"delete some (Sandbox.deleteSnapshot, sbx snapshot delete), or ask the server's admin to raise "+
			"sbx serve --team-max-snapshots", n, c.max)
	}
	return l.Unlock, nil
}
