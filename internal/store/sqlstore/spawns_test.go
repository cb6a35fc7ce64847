package sqlstore_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqldb/sqldbtest"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
)

// TestTemplateSpawns counts spawns per template on both databases from the
// sandboxes created; the last spawn time never goes back (sandboxes stored
// out of order).
func TestTemplateSpawns(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, dialect sqldb.Dialect) {
		s := sqlstore.New(sqldbtest.Open(t, dialect), nil)
		ctx := t.Context()
		t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		spawn := func(id, tpl string, at time.Time) {
			sb := store.Sandbox{ID: id, TeamID: "t1", TemplateID: tpl, State: store.StateRunning,
				StartedAt: at, EndAt: at.Add(time.Minute), AllowInternet: true}
			if err := s.InsertSandbox(ctx, sb, nil); err != nil {
				t.Fatal(err)
			}
		}
		for i, at := range []time.Time{t0, t0.Add(time.Minute), t0.Add(time.Second)} {
			spawn(fmt.Sprintf("sb%d", i), "tpl1", at)
		}
		spawn("sb9", "tpl2", t0)
		got, err := s.TemplateSpawns(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n := got["tpl1"]; n.Count != 3 || !n.Last.Equal(t0.Add(time.Minute)) {
			t.Errorf("tpl1: %+v, want 3 spawns, last at %v", n, t0.Add(time.Minute))
		}
		if n := got["tpl2"]; n.Count != 1 || !n.Last.Equal(t0) {
			t.Errorf("tpl2: %+v", n)
		}
		if _, ok := got["never"]; ok || len(got) != 2 {
			t.Errorf("spawns %+v, want tpl1 and tpl2 only", got)
		}
	})
}
