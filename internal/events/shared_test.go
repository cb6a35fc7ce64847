package events_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqldb/sqldbtest"
)

// TestReaderNeverSkipsLateCommits: writers append in transactions that stay
// open for random times (so they commit in another order than they began)
// while a reader follows the log by seq, as SSE streams and the webhook
// engine do. The reader must see every event exactly once: with a plain
// identity column on PostgreSQL it would step past events that commit late.
func TestReaderNeverSkipsLateCommits(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, dialect sqldb.Dialect) {
		db := sqldbtest.Open(t, dialect)
		log := events.NewLog(db, slog.New(slog.DiscardHandler))
		ctx := t.Context()
		const writers, each = 6, 25
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					tx, err := db.BeginTx(ctx, nil)
					if err != nil {
						t.Error(err)
						return
					}
					time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond) // work before the append
					ev := &events.Event{Type: events.SandboxCreated, TeamID: "t", SandboxID: fmt.Sprintf("w%d-%d", w, i)}
					if err := log.AppendTx(ctx, tx, ev); err != nil {
						tx.Rollback()
						t.Error(err)
						return
					}
					time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond) // commit late
					if err := tx.Commit(); err != nil {
						t.Error(err)
						return
					}
					log.Notify()
				}
			})
		}
		seen := map[string]int{}
		var cursor int64
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		read := func() {
			evs, err := log.After(ctx, cursor, 1000, events.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range evs {
				seen[ev.SandboxID]++
				cursor = ev.Seq
			}
		}
	follow:
		for {
			select {
			case <-done:
				break follow
			default:
				read()
			}
		}
		read()
		if len(seen) != writers*each {
			t.Fatalf("the reader saw %d of %d events: it skipped some that committed late", len(seen), writers*each)
		}
		for id, n := range seen {
			if n != 1 {
				t.Errorf("event %s seen %d times", id, n)
			}
		}
	})
}

// TestFollowWakesOtherServers: on PostgreSQL an append through one server
// wakes the subscribers of another sharing the database (LISTEN/NOTIFY).
func TestFollowWakesOtherServers(t *testing.T) {
	dsn := sqldbtest.DSN(t, sqldb.Postgres)
	open := func() *sqldb.DB {
		db, err := sqldb.Open(t.Context(), dsn, sqldb.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	quiet := slog.New(slog.DiscardHandler)
	a, b := events.NewLog(open(), quiet), events.NewLog(open(), quiet)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	woke := make(chan struct{}, 16)
	go func() {
		for ctx.Err() == nil {
			ch := b.Changed()
			select {
			case <-ch:
				woke <- struct{}{}
			case <-ctx.Done():
			}
		}
	}()
	go b.Follow(ctx)
	// Follow wakes once when it connects: wait for that, then append.
	select {
	case <-woke:
	case <-time.After(30 * time.Second):
		t.Fatal("Follow never connected")
	}
	if err := a.Append(ctx, &events.Event{Type: events.SandboxCreated, TeamID: "t", SandboxID: "x"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-woke:
	case <-time.After(30 * time.Second):
		t.Fatal("an append through server A never woke server B's subscribers")
	}
	evs, err := b.After(ctx, 0, 10, events.Filter{TeamID: "t"})
	if err != nil || len(evs) != 1 || evs[0].SandboxID != "x" {
		t.Fatalf("server B reads %v, %v", evs, err)
	}
}
