// Package leadertest is the contract every leader elector must keep,
// run by each implementation's tests against the real thing it elects
// through (a file lock, PostgreSQL, a kube-apiserver).
package leadertest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/leader"
)

// Campaigner is what an elector offers.
type Campaigner interface {
	Campaign(ctx context.Context, name string, lead leader.Lead) error
}

// New returns a campaigner with its own identity, as a separate server
// would have.
type New func(t *testing.T, identity string) Campaigner

// wait bounds how long the tests wait for an election: a liveness bound,
// far above DefaultTiming, not a speed claim (the fail-over time is logged).
const wait = 30 * time.Second

// Run checks the contract.
func Run(t *testing.T, newElector New) {
	t.Run("OneLeaderAtATime", func(t *testing.T) { oneLeader(t, newElector) })
	t.Run("NamesAreIndependent", func(t *testing.T) { independent(t, newElector) })
	t.Run("LeadEndsWithCampaign", func(t *testing.T) { leadEnds(t, newElector) })
	t.Run("BadName", func(t *testing.T) {
		err := newElector(t, "bad").Campaign(t.Context(), "Bad/Name", func(context.Context) {})
		if err == nil {
			t.Fatal("Campaign with the name \"Bad/Name\" succeeded; want an error naming it")
		}
	})
}

// candidate is one campaigning process in a test.
type candidate struct {
	id     string
	cancel context.CancelFunc
	done   chan struct{}
}

// election runs candidates for one name and watches their leads.
type election struct {
	t       *testing.T
	active  atomic.Int32
	overlap atomic.Int32
	leaders chan string
}

func newElection(t *testing.T) *election {
	return &election{t: t, leaders: make(chan string, 64)}
}

func (e *election) start(c Campaigner, id, name string) *candidate {
	ctx, cancel := context.WithCancel(context.Background())
	cd := &candidate{id: id, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(cd.done)
		err := c.Campaign(ctx, name, func(ctx context.Context) {
			if e.active.Add(1) > 1 {
				e.overlap.Add(1)
			}
			e.leaders <- id
			<-ctx.Done()
			time.Sleep(20 * time.Millisecond) // a lead that takes a moment to wind down
			e.active.Add(-1)
		})
		if err != nil {
			e.t.Errorf("candidate %s: Campaign: %v", id, err)
		}
	}()
	e.t.Cleanup(func() { cancel(); <-cd.done })
	return cd
}

func (e *election) next() string {
	e.t.Helper()
	select {
	case id := <-e.leaders:
		return id
	case <-time.After(wait):
		e.t.Fatalf("no candidate led within %s", wait)
		return ""
	}
}

func oneLeader(t *testing.T, newElector New) {
	e := newElection(t)
	name := fmt.Sprintf("one-%d", time.Now().UnixNano()%1e6)
	byID := map[string]*candidate{}
	for i := range 3 {
		id := fmt.Sprintf("node-%d", i)
		byID[id] = e.start(newElector(t, id), id, name)
	}
	seen := map[string]bool{}
	for round := range 3 {
		id := e.next()
		if seen[id] {
			t.Fatalf("round %d: %s led again after it stopped campaigning", round, id)
		}
		seen[id] = true
		time.Sleep(150 * time.Millisecond) // the others keep campaigning meanwhile
		stopped := time.Now()
		byID[id].cancel()
		<-byID[id].done
		if n := e.active.Load(); n != 0 {
			t.Fatalf("round %d: %d leads still running after their campaigns returned", round, n)
		}
		if round < 2 {
			who := e.next()
			t.Logf("round %d: %s stopped; %s led %s later", round, id, who, time.Since(stopped).Round(time.Millisecond))
			e.leaders <- who // the next round reads it
		}
	}
	if n := e.overlap.Load(); n != 0 {
		t.Fatalf("two candidates led at once %d times", n)
	}
	select {
	case id := <-e.leaders:
		t.Fatalf("%s led after every candidate stopped", id)
	case <-time.After(300 * time.Millisecond):
	}
}

func independent(t *testing.T, newElector New) {
	base := fmt.Sprintf("ind-%d", time.Now().UnixNano()%1e6)
	var wg sync.WaitGroup
	for i, name := range []string{base + "-a", base + "-b"} {
		wg.Add(1)
		e := newElection(t)
		e.start(newElector(t, fmt.Sprintf("n%d", i)), fmt.Sprintf("n%d", i), name)
		go func() { defer wg.Done(); e.next() }()
	}
	wg.Wait() // both lead at once: one election does not hold the other back
}

func leadEnds(t *testing.T, newElector New) {
	name := fmt.Sprintf("ends-%d", time.Now().UnixNano()%1e6)
	ctx, cancel := context.WithCancel(t.Context())
	led, ended, returned := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		returned <- newElector(t, "solo").Campaign(ctx, name, func(lctx context.Context) {
			close(led)
			<-lctx.Done()
			close(ended)
		})
	}()
	select {
	case <-led:
	case <-time.After(wait):
		t.Fatalf("a lone candidate did not lead within %s", wait)
	}
	cancel()
	for what, ch := range map[string]chan struct{}{"lead's context": ended} {
		select {
		case <-ch:
		case <-time.After(wait):
			t.Fatalf("%s was not cancelled within %s of the campaign's", what, wait)
		}
	}
	select {
	case err := <-returned:
		if err != nil {
			t.Fatalf("Campaign returned %v after its context ended; want nil", err)
		}
	case <-time.After(wait):
		t.Fatalf("Campaign did not return within %s of its context ending", wait)
	}
}
