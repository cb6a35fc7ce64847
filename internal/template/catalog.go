package template

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Catalog answers what templates exist from the database, for a process
// that builds nothing and holds no layers (an api replica): the nodes
// build and register templates in their own registries, so the replica's
// registry knows only the built-in ones. Its entries carry no layers:
// they are for listing and alias lookups, not for starting.
//
// It answers from a view of the ready team templates read at most once
// per CatalogRefresh (as the replica's node view is), not from the
// database on each request: a listing read every template row and one
// build row per team template before. A change written through this
// process (a delete, a rename, a build's end) is seen at once; one written
// by another process (a node finishing a build) within CatalogRefresh, at
// once by a lookup that misses, and at once after this process showed a
// client the build ready (sawReady).
type Catalog struct{ s *Service }

// Catalog returns the service's database-backed template listing.
func (s *Service) Catalog() Catalog { return Catalog{s: s} }

// CatalogRefresh is the most a listing lags the database by.
const CatalogRefresh = time.Second

// catalogMissRefresh is how often a lookup that misses may read the
// database again (a name just built elsewhere, or an unknown one).
const catalogMissRefresh = 100 * time.Millisecond

// catalogTimeout bounds one refresh's database reads: List and Get have no
// context of their own (api.Templates).
const catalogTimeout = 5 * time.Second

// List returns the built-in templates and teamID's ready ones, oldest
// first, as Registry.List does on a server that builds.
func (c Catalog) List(teamID string) []Template {
	out := c.s.reg.List(teamID)
	if teamID == "" {
		return out
	}
	v := c.view(CatalogRefresh)
	seen := make(map[string]bool, len(out))
	for _, t := range out {
		seen[t.ID] = true
	}
	for _, t := range v.byTeam[teamID] {
		if !seen[t.ID] {
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
	if t, ok := c.view(CatalogRefresh).find(name); ok {
		return t, true
	}
	return c.view(catalogMissRefresh).find(name)
}

// catalogView is one reading of the ready team templates.
type catalogView struct {
	at      time.Time
	changes uint64                // Store.Changes when read
	byTeam  map[string][]Template // team ID → its ready templates
	byID    map[string]Template
	byName  map[string]Template
	builds  map[string]BuildRecord // the ready current builds (ready is final)
}

func (v *catalogView) find(name string) (Template, bool) {
	if t, ok := v.byID[name]; ok {
		return t, true
	}
	t, ok := v.byName[strings.ToLower(name)]
	return t, ok
}

// catalogCache holds the last view; one refresh runs at a time.
type catalogCache struct {
	refresh sync.Mutex
	last    atomic.Pointer[catalogView]
}

// sawReady is told of a ready build a client was shown (its status): a
// client that waited for it may list or look it up next, on this replica,
// so a view read before it finished is not answered from. A node makes
// the build its template's current one before it records it ready.
// Builds that finished well before the view (clocks differ by node) do
// not count: a client polling an old build costs no extra reads.
func (cc *catalogCache) sawReady(st *Store, b BuildRecord) {
	v := cc.last.Load()
	if v == nil {
		return
	}
	if _, ok := v.builds[b.ID]; !ok && b.FinishedAt.After(v.at.Add(-CatalogRefresh)) {
		st.changed()
	}
}

// view returns a view read less than maxAge ago and after the last change
// written through this process, reading the database if there is none.
// A failed read keeps the last view (logged).
func (c Catalog) view(maxAge time.Duration) *catalogView {
	cc := &c.s.catalog
	fresh := func(v *catalogView) bool {
		return v != nil && v.changes == c.s.store.Changes() && c.s.now().Sub(v.at) < maxAge
	}
	if v := cc.last.Load(); fresh(v) {
		return v
	}
	cc.refresh.Lock()
	defer cc.refresh.Unlock()
	old := cc.last.Load()
	if fresh(old) { // another request read it meanwhile
		return old
	}
	v, err := c.read(old)
	if err != nil {
		c.s.log.Warn("list templates from the database; answering from the last reading", "err", err)
		if old == nil {
			return &catalogView{}
		}
		return old
	}
	cc.last.Store(v)
	return v
}

// read reads every template row, and the build rows of current builds not
// already known ready.
func (c Catalog) read(old *catalogView) (*catalogView, error) {
	ctx, cancel := context.WithTimeout(context.Background(), catalogTimeout)
	defer cancel()
	// Taken before the reads: a change written during them makes the
	// next request read again.
	changes, at := c.s.store.Changes(), c.s.now()
	recs, err := c.s.store.Templates(ctx)
	if err != nil {
		return nil, err
	}
	v := &catalogView{at: at, changes: changes, byTeam: map[string][]Template{},
		byID: map[string]Template{}, byName: map[string]Template{}, builds: map[string]BuildRecord{}}
	for _, r := range recs {
		if r.CurrentBuild == "" {
			continue
		}
		b, ok := BuildRecord{}, false
		if old != nil {
			b, ok = old.builds[r.CurrentBuild]
		}
		if !ok {
			if b, err = c.s.store.Build(ctx, r.CurrentBuild); err != nil || b.Status != StatusReady {
				continue
			}
		}
		v.builds[b.ID] = b
		t := Template{ID: r.ID, BuildID: b.ID, Names: r.Names, Public: r.Public, TeamID: r.TeamID,
			CPUCount: r.CPUCount, MemoryMB: r.MemoryMB, DiskMB: r.DiskMB, Status: StatusReady,
			CreatedAt: r.CreatedAt, UpdatedAt: b.FinishedAt}
		v.byTeam[r.TeamID] = append(v.byTeam[r.TeamID], t)
		v.byID[r.ID] = t
		for _, n := range r.Names {
			if _, taken := v.byName[n]; !taken { // the oldest, as findByName
				v.byName[n] = t
			}
		}
	}
	return v, nil
}
