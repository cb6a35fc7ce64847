package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/template"
)

// Builds finds a team template's current build (template.Service, reading
// the database): an api replica's registry holds only the built-in
// templates.
type Builds interface {
	CurrentBuild(ctx context.Context, teamID, ref string) (template.Template, bool, error)
}

// buildsTTL is how long a lookup is reused: a rebuild is placed by its
// new build's layers at most this late (it starts either way).
const buildsTTL = 5 * time.Second

// buildCache keeps lookups of (team, template) for buildsTTL, so a burst
// of creates reads the template's row once.
type buildCache struct {
	src Builds
	now func() time.Time

	mu      sync.Mutex
	entries map[[2]string]buildEntry
}

type buildEntry struct {
	t  template.Template
	ok bool
	at time.Time
}

func (c *buildCache) get(ctx context.Context, teamID, ref string) (template.Template, bool) {
	key, now := [2]string{teamID, ref}, c.now()
	c.mu.Lock()
	e, hit := c.entries[key]
	c.mu.Unlock()
	if hit && now.Sub(e.at) < buildsTTL {
		return e.t, e.ok
	}
	t, ok, err := c.src.CurrentBuild(ctx, teamID, ref)
	if err != nil {
		return template.Template{}, false // placed without affinity; the node reports a real problem
	}
	c.mu.Lock()
	if len(c.entries) > 10_000 {
		clear(c.entries)
	}
	c.entries[key] = buildEntry{t: t, ok: ok, at: now}
	c.mu.Unlock()
	return t, ok
}

// SetBuilds makes creates of team templates sized by the template and
// placed preferring nodes that hold its current build's layers.
func (s *Sandboxes) SetBuilds(b Builds) {
	s.builds = &buildCache{src: b, now: time.Now, entries: map[[2]string]buildEntry{}}
}
