package sandbox

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestReclaimerReusesItsThreads: a burst of kills is torn down by at most
// reclaimConcurrency workers at once, each on a niced thread it keeps
// while work keeps coming (a thread per kill cost a clone and an exit
// each), and every teardown is done when the wait returns.
func TestReclaimerReusesItsThreads(t *testing.T) {
	t.Parallel()
	var r reclaimer
	var (
		mu          sync.Mutex
		done        = map[string]bool{}
		tids        = map[int]bool{}
		inFlight    int
		maxInFlight int
		two         = make(chan struct{}) // closed when two run at once
	)
	closeTwo := sync.OnceFunc(func() { close(two) })
	destroy := func(_ context.Context, id string) {
		mu.Lock()
		inFlight++
		maxInFlight = max(maxInFlight, inFlight)
		tids[unix.Gettid()] = true
		if inFlight == 2 {
			closeTwo()
		}
		mu.Unlock()
		if prio, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid()); err != nil || 20-prio != reclaimNice {
			t.Errorf("teardown of %s ran at nice %d (%v), want %d", id, 20-prio, err, reclaimNice)
		}
		if id == "sb0" { // the burst queues up behind it; another worker must come
			select {
			case <-two:
			case <-time.After(10 * time.Second):
			}
		}
		mu.Lock()
		inFlight--
		done[id] = true
		mu.Unlock()
	}
	const n = 60
	for i := range n {
		r.add(fmt.Sprint("sb", i), destroy)
	}
	r.wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(done) != n {
		t.Fatalf("%d of %d teardowns done when the wait returned", len(done), n)
	}
	if maxInFlight > reclaimConcurrency || maxInFlight < 2 {
		t.Errorf("%d teardowns at once, want 2..%d", maxInFlight, reclaimConcurrency)
	}
	if len(tids) > reclaimConcurrency {
		t.Errorf("%d threads for %d teardowns: want at most %d, reused", len(tids), n, reclaimConcurrency)
	}
}
