package leader_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/leader"
	"github.com/sbxdev/sbx/internal/leader/leadertest"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqldb/sqldbtest"
)

// openServer opens dsn as a server of its own would: its own pool.
func openServer(t *testing.T, dsn string) *sqldb.DB {
	t.Helper()
	db, err := sqldb.Open(context.Background(), dsn, sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestPostgresElector(t *testing.T) {
	dsn := sqldbtest.DSN(t, sqldb.Postgres)
	leadertest.Run(t, func(t *testing.T, id string) leadertest.Campaigner {
		return &leader.Postgres{DB: openServer(t, dsn)}
	})
}

// TestPostgresElectorSessionLost: a leader whose database session is
// killed (as when its connection breaks) stops leading, and another
// server takes over.
func TestPostgresElectorSessionLost(t *testing.T) {
	dsn := sqldbtest.DSN(t, sqldb.Postgres)
	admin := openServer(t, dsn)
	var leading atomic.Int32
	leaders := make(chan string, 8)
	for _, id := range []string{"a", "b"} {
		e := &leader.Postgres{DB: openServer(t, dsn)}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			e.Campaign(ctx, "sweep", func(ctx context.Context) {
				if leading.Add(1) > 1 {
					t.Errorf("%s leads while another does", id)
				}
				leaders <- id
				<-ctx.Done()
				leading.Add(-1)
			})
		}()
		t.Cleanup(func() { cancel(); <-done })
	}
	first := waitLeader(t, leaders)
	var pid int
	err := admin.QueryRowContext(t.Context(), `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted LIMIT 1`).Scan(&pid)
	if err != nil {
		t.Fatalf("find the leader's session: %v", err)
	}
	killed := time.Now()
	if _, err := admin.ExecContext(t.Context(), `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	second := waitLeader(t, leaders)
	t.Logf("%s's session was terminated; %s led %s later", first, second, time.Since(killed).Round(time.Millisecond))
}

func waitLeader(t *testing.T, leaders chan string) string {
	t.Helper()
	select {
	case id := <-leaders:
		return id
	case <-time.After(30 * time.Second):
		t.Fatal("no server led within 30 s")
		return ""
	}
}
