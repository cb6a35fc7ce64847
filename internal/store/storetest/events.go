package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
)

// EventsFactory returns a fresh, empty event repository and the database
// it writes to (for the transactions AppendEvent joins).
type EventsFactory func(t *testing.T) (store.Events, *sqldb.DB)

// RunEvents runs the event log's conformance suite.
func RunEvents(t *testing.T, newEvents EventsFactory) {
	t.Run("AppendAndList", func(t *testing.T) { testEventsList(t, newEvents) })
	t.Run("AfterAndTransactions", func(t *testing.T) { testEventsAfter(t, newEvents) })
	t.Run("Lookups", func(t *testing.T) { testEventsLookups(t, newEvents) })
	t.Run("ReaderNeverSkipsLateCommits", func(t *testing.T) { testEventsLateCommits(t, newEvents) })
	t.Run("Follow", func(t *testing.T) { testEventsFollow(t, newEvents) })
}

var eventBase = time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)

func newEvent(i int, typ, team, sandbox string, data map[string]any) *store.Event {
	return &store.Event{ID: uuid.NewString(), Version: "v2", Type: typ, TeamID: team, SandboxID: sandbox,
		SandboxTemplateID: "tpl", SandboxBuildID: "bld", SandboxExecutionID: "exe", EventData: data,
		Timestamp: eventBase.Add(time.Duration(i) * time.Second)}
}

func appendEvents(t *testing.T, r store.Events, evs ...*store.Event) {
	t.Helper()
	for _, ev := range evs {
		if err := r.AppendEvent(t.Context(), nil, ev); err != nil {
			t.Fatalf("AppendEvent: %v", err)
		}
	}
}

func seqs(evs []store.Event) []int64 {
	out := []int64{}
	for _, ev := range evs {
		out = append(out, ev.Seq)
	}
	return out
}

func testEventsList(t *testing.T, newEvents EventsFactory) {
	r, _ := newEvents(t)
	ctx := t.Context()
	data := map[string]any{"kill_reason": "request", "sandbox_metadata": map[string]any{"k": "v"}}
	evs := []*store.Event{
		newEvent(1, "sandbox.lifecycle.created", "a", "sb1", nil),
		newEvent(2, "sandbox.lifecycle.created", "b", "sb2", nil),
		newEvent(3, "sandbox.lifecycle.killed", "a", "sb1", data),
		newEvent(4, "template.build.started", "a", "", nil),
	}
	appendEvents(t, r, evs...)
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq <= evs[i-1].Seq {
			t.Fatalf("seq not increasing: %d then %d", evs[i-1].Seq, evs[i].Seq)
		}
	}
	got, err := r.ListEvents(ctx, store.EventFilter{TeamID: "a", SandboxID: "sb1", Types: []string{"sandbox.lifecycle.killed"}})
	if err != nil || len(got) != 1 {
		t.Fatalf("ListEvents(killed of sb1) = %+v, %v", got, err)
	}
	want := *evs[2]
	if !reflect.DeepEqual(got[0], want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got[0], want)
	}
	if all, _ := r.ListEvents(ctx, store.EventFilter{SandboxID: "sb2"}); len(all) != 1 || all[0].EventData != nil {
		t.Errorf("an event without data reads back %+v, want nil EventData", all)
	}
	s := func(i ...int) []int64 {
		out := []int64{}
		for _, j := range i {
			out = append(out, evs[j].Seq)
		}
		return out
	}
	for _, c := range []struct {
		name string
		f    store.EventFilter
		want []int64
	}{
		{"team, newest first", store.EventFilter{TeamID: "a"}, s(3, 2, 0)},
		{"ascending", store.EventFilter{TeamID: "a", OrderAsc: true}, s(0, 2, 3)},
		{"types", store.EventFilter{Types: []string{"sandbox.lifecycle.created", "template.build.started"}}, s(3, 1, 0)},
		{"paged", store.EventFilter{Limit: 2, Offset: 1}, s(2, 1)},
		{"other team", store.EventFilter{TeamID: "c"}, s()},
	} {
		got, err := r.ListEvents(ctx, c.f)
		if err != nil || !reflect.DeepEqual(seqs(got), c.want) {
			t.Errorf("%s: ListEvents = %v, %v; want %v", c.name, seqs(got), err, c.want)
		}
	}
}

func testEventsAfter(t *testing.T, newEvents EventsFactory) {
	r, db := newEvents(t)
	ctx := t.Context()
	evs := []*store.Event{
		newEvent(1, "sandbox.lifecycle.created", "a", "sb1", nil),
		newEvent(2, "sandbox.lifecycle.created", "b", "sb2", nil),
		newEvent(3, "sandbox.lifecycle.killed", "a", "sb1", nil),
	}
	appendEvents(t, r, evs...)
	got, err := r.EventsAfter(ctx, nil, evs[0].Seq, 10, store.EventFilter{TeamID: "a", Limit: 1, Offset: 5})
	if err != nil || !reflect.DeepEqual(seqs(got), []int64{evs[2].Seq}) {
		t.Fatalf("EventsAfter(team a) = %v, %v; want [%d] (paging fields ignored)", seqs(got), err, evs[2].Seq)
	}
	if got, _ := r.EventsAfter(ctx, nil, 0, 2, store.EventFilter{}); !reflect.DeepEqual(seqs(got), []int64{evs[0].Seq, evs[1].Seq}) {
		t.Fatalf("EventsAfter(limit 2) = %v", seqs(got))
	}

	// In a transaction: its own appends are visible to it, and vanish
	// with it when it rolls back.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	ev := newEvent(4, "sandbox.lifecycle.paused", "a", "sb1", nil)
	if err := r.AppendEvent(ctx, tx, ev); err != nil {
		t.Fatal(err)
	}
	if got, err := r.EventsAfter(ctx, tx, evs[2].Seq, 10, store.EventFilter{}); err != nil || len(got) != 1 || got[0].ID != ev.ID {
		t.Fatalf("EventsAfter in the appending transaction = %+v, %v", got, err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.EventsAfter(ctx, nil, evs[2].Seq, 10, store.EventFilter{}); len(got) != 0 {
		t.Fatalf("a rolled-back event is visible: %+v", got)
	}
	if has, err := r.HasEvent(ctx, ev.ID); err != nil || has {
		t.Fatalf("HasEvent(rolled back) = %v, %v", has, err)
	}
	// Committed, it follows the others.
	tx, err = db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := r.AppendEvent(ctx, tx, ev); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.EventsAfter(ctx, nil, evs[2].Seq, 10, store.EventFilter{}); len(got) != 1 || got[0].Seq <= evs[2].Seq {
		t.Fatalf("committed event after %d reads %+v", evs[2].Seq, got)
	}
}

func testEventsLookups(t *testing.T, newEvents EventsFactory) {
	r, _ := newEvents(t)
	ctx := t.Context()
	if seq, err := r.LastEventSeq(ctx); err != nil || seq != 0 {
		t.Fatalf("LastEventSeq(empty) = %d, %v", seq, err)
	}
	if team, err := r.LatestEventTeam(ctx); err != nil || team != "" {
		t.Fatalf("LatestEventTeam(empty) = %q, %v", team, err)
	}
	a, b, none := newEvent(1, "x", "a", "", nil), newEvent(2, "x", "b", "", nil), newEvent(3, "webhook.disabled", "", "", nil)
	appendEvents(t, r, a, b, none)
	if seq, err := r.LastEventSeq(ctx); err != nil || seq != none.Seq {
		t.Fatalf("LastEventSeq = %d, %v; want %d", seq, err, none.Seq)
	}
	if team, err := r.LatestEventTeam(ctx); err != nil || team != "b" {
		t.Fatalf("LatestEventTeam = %q, %v; want b (the newest event naming a team)", team, err)
	}
	if has, err := r.HasEvent(ctx, a.ID); err != nil || !has {
		t.Fatalf("HasEvent(stored) = %v, %v", has, err)
	}
	if has, err := r.HasEvent(ctx, "nope"); err != nil || has {
		t.Fatalf("HasEvent(unknown) = %v, %v", has, err)
	}
	dup := *a
	if err := r.AppendEvent(ctx, nil, &dup); err == nil {
		t.Fatal("appending an event ID twice succeeded")
	}
}

// testEventsLateCommits: writers append in transactions that stay open for
// random times (so they commit in another order than they began) while a
// reader follows the log by seq, as SSE streams and the webhook engine do.
// The reader must see every event exactly once: with a plain identity
// column on PostgreSQL it would step past events that commit late.
func testEventsLateCommits(t *testing.T, newEvents EventsFactory) {
	r, db := newEvents(t)
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
				if err := r.AppendEvent(ctx, tx, newEvent(i, "x", "t", fmt.Sprintf("w%d-%d", w, i), nil)); err != nil {
					tx.Rollback()
					t.Error(err)
					return
				}
				time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond) // commit late
				if err := tx.Commit(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	seen := map[string]int{}
	var cursor int64
	read := func() {
		evs, err := r.EventsAfter(ctx, nil, cursor, 1000, store.EventFilter{})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			seen[ev.SandboxID]++
			cursor = ev.Seq
		}
	}
	for following := true; following; {
		select {
		case <-done:
			following = false
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
}

// testEventsFollow: on a database shared by servers an append wakes
// followers (through the database, not this process); where one server owns
// the database FollowEvents returns at once.
func testEventsFollow(t *testing.T, newEvents EventsFactory) {
	r, db := newEvents(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	woke := make(chan struct{}, 16)
	ret := make(chan error, 1)
	go func() { ret <- r.FollowEvents(ctx, func() { woke <- struct{}{} }) }()
	if db.Dialect() != sqldb.Postgres {
		select {
		case err := <-ret:
			if err != nil {
				t.Fatalf("FollowEvents = %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("FollowEvents on a database of one server did not return")
		}
		return
	}
	select { // the wake-up after connecting
	case <-woke:
	case <-time.After(30 * time.Second):
		t.Fatal("FollowEvents never connected")
	}
	appendEvents(t, r, newEvent(1, "x", "a", "", nil))
	select {
	case <-woke:
	case <-time.After(30 * time.Second):
		t.Fatal("an append never woke the follower")
	}
	cancel()
	if err := <-ret; err != nil {
		t.Fatalf("FollowEvents after cancel = %v", err)
	}
}
