package sqlstore_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqldb/sqldbtest"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
)

// TestReserveSlotRaces: two stores (two servers' connections) on one
// database race for a team's last slot 100 times; exactly one create wins
// each time, and a released or expired slot is free again.
func TestReserveSlotRaces(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, dialect sqldb.Dialect) {
		dsn := sqldbtest.DSN(t, dialect)
		var stores [2]*sqlstore.Store
		for i := range stores {
			db, err := sqldb.Open(t.Context(), dsn, sqldb.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			stores[i] = sqlstore.New(db, nil)
		}
		ctx := t.Context()
		const limit, racers = 3, 8
		var held []string
		for range limit - 1 {
			id, _, ok, err := stores[0].ReserveSlot(ctx, "team", "node-a", limit, time.Hour)
			if err != nil || !ok {
				t.Fatalf("reserve below the limit: %v %v", ok, err)
			}
			held = append(held, id)
		}
		for round := range 100 {
			var wins atomic.Int32
			var winner atomic.Value
			var wg sync.WaitGroup
			for r := range racers {
				wg.Go(func() {
					id, n, ok, err := stores[r%2].ReserveSlot(ctx, "team", "node", limit, time.Hour)
					if err != nil {
						t.Errorf("round %d: %v", round, err)
						return
					}
					if ok {
						wins.Add(1)
						winner.Store(id)
					} else if n != limit {
						t.Errorf("round %d: refused with %d held, want %d", round, n, limit)
					}
				})
			}
			wg.Wait()
			if w := wins.Load(); w != 1 {
				t.Fatalf("round %d: %d creates took the last slot, want 1", round, w)
			}
			if err := stores[round%2].ReleaseSlot(ctx, winner.Load().(string)); err != nil {
				t.Fatal(err)
			}
		}
		// Another team is not affected; an expired reservation frees its slot.
		if _, _, ok, err := stores[1].ReserveSlot(ctx, "other", "node-b", 1, time.Nanosecond); err != nil || !ok {
			t.Fatalf("other team: %v %v", ok, err)
		}
		time.Sleep(time.Millisecond)
		if _, _, ok, err := stores[0].ReserveSlot(ctx, "other", "node-a", 1, time.Hour); err != nil || !ok {
			t.Fatalf("after the other team's reservation expired: %v %v", ok, err)
		}
	})
}
