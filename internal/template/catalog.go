package template

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// Catalog answers what templates exist from the database, for a process
// that builds nothing and holds no layers (an api replica): the nodes
// build and register templates in their own registries, so the replica's
// registry knows only the built-in ones. Its entries carry no layers:
// they are for listing and alias lookups, not for starting.
type Catalog struct{ s *Service }

// Catalog returns the service's database-backed template listing.
func (s *Service) Catalog() Catalog { return Catalog{s: s} }

// catalogTimeout bounds one listing's database reads: List and Get have no
// context of their own (api.Templates).
const catalogTimeout = 5 * time.Second

// List returns the built-in templates and teamID's ready ones, oldest
// first, as Registry.List does on a server that builds.
func (c Catalog) List(teamID string) []Template {
	out := c.s.reg.List(teamID)
	if teamID == "" {
		return out
	}
	ctx, cancel := context.WithTimeout(context.Background(), catalogTimeout)
	defer cancel()
	recs, err := c.s.store.Templates(ctx)
	if err != nil {
		c.s.log.Warn("list templates from the database", "err", err)
		return out
	}
	seen := make(map[string]bool, len(out))
	for _, t := range out {
		seen[t.ID] = true
	}
	for _, r := range recs {
		if r.TeamID != teamID || seen[r.ID] {
			continue
		}
		if t, ok := c.ready(ctx, r); ok {
			out = append(out, t)
		}
	}
	sortTemplates(out)
	return out
}

// Get finds a template by ID or name: the registry's, else the database's
// (any team's; callers check visibility, as with Registry.Get).
func (c Catalog) Get(ref string) (Template, bool) {
	if t, ok := c.s.reg.Get(ref); ok {
		return t, true
	}
	name, _ := SplitRef(ref)
	ctx, cancel := context.WithTimeout(context.Background(), catalogTimeout)
	defer cancel()
	r, err := c.s.store.Template(ctx, name)
	if errors.Is(err, errdefs.ErrNotFound) {
		var ok bool
		if r, ok = c.s.findByName(ctx, strings.ToLower(name)); !ok {
			return Template{}, false
		}
	} else if err != nil {
		c.s.log.Warn("look a template up in the database", "template", name, "err", err)
		return Template{}, false
	}
	return c.ready(ctx, r)
}

// ready is r as of its current build, if that build is ready.
func (c Catalog) ready(ctx context.Context, r Record) (Template, bool) {
	if r.CurrentBuild == "" {
		return Template{}, false
	}
	b, err := c.s.store.Build(ctx, r.CurrentBuild)
	if err != nil || b.Status != StatusReady {
		return Template{}, false
	}
	return Template{ID: r.ID, BuildID: b.ID, Names: r.Names, Public: r.Public, TeamID: r.TeamID,
		CPUCount: r.CPUCount, MemoryMB: r.MemoryMB, DiskMB: r.DiskMB, Status: StatusReady,
		CreatedAt: r.CreatedAt, UpdatedAt: b.FinishedAt}, true
}
