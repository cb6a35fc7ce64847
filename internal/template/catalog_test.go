package template

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/events/eventstest"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
)

// countingRepo counts the reads Catalog makes of a real store.
type countingRepo struct {
	templatesRepo
	lists, builds atomic.Int32
}

func (r *countingRepo) Templates(ctx context.Context) ([]store.TemplateRecord, error) {
	r.lists.Add(1)
	return r.templatesRepo.Templates(ctx)
}

func (r *countingRepo) Build(ctx context.Context, id string) (store.BuildRecord, error) {
	r.builds.Add(1)
	return r.templatesRepo.Build(ctx, id)
}

// catalogEnv is a Catalog over SQLite (or PostgreSQL) with a clock the
// test moves, and a second store standing for another process (a node
// finishing a build), whose writes this one does not see.
type catalogEnv struct {
	cat   Catalog
	repo  *countingRepo
	other *Store
	now   time.Time
}

func newCatalogEnv(t *testing.T) *catalogEnv {
	t.Helper()
	db := eventstest.OpenDB(t, filepath.Join(t.TempDir(), "sbx.db"))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := &catalogEnv{repo: &countingRepo{templatesRepo: sqlstore.New(db, nil)}, other: NewStore(sqlstore.New(db, nil)),
		now: time.Now().UTC().Add(time.Hour)} // after the built-in's creation: listed first
	reg := NewRegistry(log)
	reg.Put(Template{ID: "base", BuildID: "base", Names: []string{"base"}})
	e.cat = (&Service{log: log, store: NewStore(e.repo), reg: reg, now: func() time.Time { return e.now }}).Catalog()
	return e
}

// add writes a template of team with one build in status, through st.
func (e *catalogEnv) add(t *testing.T, st *Store, team, id, status string) {
	t.Helper()
	ctx := t.Context()
	e.now = e.now.Add(time.Millisecond) // distinct creation times: a stable order
	if err := st.CreateTemplate(ctx, Record{ID: id, TeamID: team, Names: []string{id + "-name"}, CreatedAt: e.now, UpdatedAt: e.now}); err != nil {
		t.Fatal(err)
	}
	b := BuildRecord{ID: id + "-b1", TemplateID: id, Status: StatusBuilding, CreatedAt: e.now}
	if err := st.CreateBuild(ctx, b); err != nil {
		t.Fatal(err)
	}
	e.finish(t, st, id, status)
}

// finish sets the build's status and, when ready, makes it current.
func (e *catalogEnv) finish(t *testing.T, st *Store, id, status string) {
	t.Helper()
	b, err := st.Build(t.Context(), id+"-b1")
	if err != nil {
		t.Fatal(err)
	}
	b.Status, b.FinishedAt = status, e.now
	if err := st.UpdateBuild(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	if status == StatusReady {
		r, err := st.Template(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		r.CurrentBuild = b.ID
		if err := st.UpdateTemplate(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *catalogEnv) ids(team string) []string {
	var out []string
	for _, tpl := range e.cat.List(team) {
		out = append(out, tpl.ID)
	}
	return out
}

// reads returns and resets the counts of template listings and build reads.
func (e *catalogEnv) reads() (lists, builds int32) {
	return e.repo.lists.Swap(0), e.repo.builds.Swap(0)
}

// Catalog reads the database once per refresh, not per request; each team
// sees only its own templates; a change written here is seen at once, one
// written by another process within CatalogRefresh or by a lookup's miss.
func TestCatalogReadsOncePerRefresh(t *testing.T) {
	t.Parallel()
	e := newCatalogEnv(t)
	for _, id := range []string{"a1", "a2", "a3"} {
		e.add(t, e.cat.s.store, "team-a", id, StatusReady)
	}
	e.add(t, e.cat.s.store, "team-a", "a4", StatusError)
	e.add(t, e.cat.s.store, "team-b", "b1", StatusReady)
	e.reads()

	for range 10 {
		if got, want := e.ids("team-a"), []string{"base", "a1", "a2", "a3"}; !slices.Equal(got, want) {
			t.Fatalf("team-a lists %v; want %v", got, want)
		}
		if got, want := e.ids("team-b"), []string{"base", "b1"}; !slices.Equal(got, want) {
			t.Fatalf("team-b lists %v; want %v", got, want)
		}
	}
	if got, want := e.ids("team-c"), []string{"base"}; !slices.Equal(got, want) {
		t.Fatalf("team-c lists %v; want %v", got, want)
	}
	if _, ok := e.cat.Get("a2-name"); !ok {
		t.Error("Get(a2-name) found nothing")
	}
	if lists, builds := e.reads(); lists != 1 || builds != 4 {
		t.Errorf("21 listings and a lookup read the template rows %d times and %d builds; want once and 4 (one per current build)", lists, builds)
	}

	// After the refresh period, one listing reads the rows again; ready
	// builds are not read again (ready is final).
	e.now = e.now.Add(CatalogRefresh)
	e.ids("team-a")
	e.ids("team-b")
	if lists, builds := e.reads(); lists != 1 || builds != 0 {
		t.Errorf("after %v: %d template listings, %d build reads; want 1 and 0", CatalogRefresh, lists, builds)
	}

	// A delete through this process is seen at once.
	if err := e.cat.s.store.DeleteTemplate(t.Context(), "a2"); err != nil {
		t.Fatal(err)
	}
	if got, want := e.ids("team-a"), []string{"base", "a1", "a3"}; !slices.Equal(got, want) {
		t.Fatalf("after deleting a2, team-a lists %v; want %v", got, want)
	}
	if _, ok := e.cat.Get("a2-name"); ok {
		t.Error("Get(a2-name) still finds the deleted template")
	}

	// Another process's build: listed after the refresh period, found at
	// once by a lookup (a miss reads again, at most every 100 ms).
	e.add(t, e.other, "team-b", "b2", StatusReady)
	if got, want := e.ids("team-b"), []string{"base", "b1"}; !slices.Equal(got, want) {
		t.Fatalf("within the refresh period team-b lists %v; want %v (the last reading)", got, want)
	}
	e.now = e.now.Add(catalogMissRefresh)
	e.reads()
	if got, ok := e.cat.Get("b2-name"); !ok || got.TeamID != "team-b" || got.BuildID != "b2-b1" {
		t.Fatalf("Get(b2-name) = %+v, %v; want team-b's b2 at build b2-b1", got, ok)
	}
	for range 5 {
		if _, ok := e.cat.Get("no-such-template"); ok {
			t.Fatal("Get(no-such-template) found one")
		}
	}
	if lists, _ := e.reads(); lists != 1 {
		t.Errorf("a lookup of a new name and 5 of an unknown one read the rows %d times; want 1", lists)
	}
	if got, want := e.ids("team-b"), []string{"base", "b1", "b2"}; !slices.Equal(got, want) {
		t.Fatalf("team-b lists %v; want %v", got, want)
	}
	if got, want := e.ids("team-a"), []string{"base", "a1", "a3"}; !slices.Equal(got, want) {
		t.Fatalf("team-a lists %v; want %v (never another team's)", got, want)
	}

	// Another process's build that a client was shown ready through this
	// process is listed at once; polling a build already listed reads
	// nothing more.
	e.add(t, e.other, "team-b", "b3", StatusReady)
	if st, err := e.cat.s.BuildStatus(t.Context(), "team-b", "b3", "b3-b1", 0, 0); err != nil || st.Status != StatusReady {
		t.Fatalf("status of b3's build = %+v, %v; want ready", st, err)
	}
	if got, want := e.ids("team-b"), []string{"base", "b1", "b2", "b3"}; !slices.Equal(got, want) {
		t.Fatalf("once b3 was shown ready, team-b lists %v; want %v", got, want)
	}
	e.reads()
	for range 3 {
		if _, err := e.cat.s.BuildStatus(t.Context(), "team-b", "b1", "b1-b1", 0, 0); err != nil {
			t.Fatal(err)
		}
		e.ids("team-b")
	}
	if lists, _ := e.reads(); lists != 0 {
		t.Errorf("polling a listed build's status made %d template listings; want none", lists)
	}

	// A build that ends here is seen at once.
	e.add(t, e.cat.s.store, "team-a", "a5", StatusBuilding)
	e.ids("team-a")
	e.finish(t, e.cat.s.store, "a5", StatusReady)
	if got, want := e.ids("team-a"), []string{"base", "a1", "a3", "a5"}; !slices.Equal(got, want) {
		t.Fatalf("after a5's build, team-a lists %v; want %v", got, want)
	}
}
