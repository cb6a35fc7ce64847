package sqlstore_test

import (
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqldb/sqldbtest"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
)

// TestTemplateSpawns counts spawns per template on both databases; the
// last spawn time never goes back (spawns recorded out of order).
func TestTemplateSpawns(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, dialect sqldb.Dialect) {
		s := sqlstore.New(sqldbtest.Open(t, dialect), nil)
		ctx := t.Context()
		t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		for _, at := range []time.Time{t0, t0.Add(time.Minute), t0.Add(time.Second)} {
			if err := s.RecordSpawn(ctx, "tpl1", at); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.RecordSpawn(ctx, "tpl2", t0); err != nil {
			t.Fatal(err)
		}
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
