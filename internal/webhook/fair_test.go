package webhook

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/events"
)

// TestBacklogDoesNotStarveOthers: one webhook's backlog must not hold up
// another's delivery for as long as the backlog lasts. With one worker,
// webhook a has a backlog of n events; b gets one event once a's backlog
// is flowing. A worker hands a lane back to the dispatcher after RecordLag
// deliveries in a row, so b's delivery goes after a few batches of a's, not
// after all of them.
func TestBacklogDoesNotStarveOthers(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.Workers = 1
	e := newEnv(t, cfg)
	const n = 300
	var mu sync.Mutex
	aSeen, bAt := 0, -1
	recvA := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(3 * time.Millisecond) // a backlog that takes about a second
		mu.Lock()
		aSeen++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(recvA.Close)
	recvB := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		bAt = aSeen
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(recvB.Close)
	createHook(t, e.eng, "a", recvA.URL)
	createHook(t, e.eng, "b", recvB.URL)
	tx, err := e.db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := e.log.AppendTx(t.Context(), tx, &events.Event{Type: events.SandboxCreated, TeamID: "a", SandboxID: "sb" + itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	run(t, e.eng)
	waitFor(t, "a's backlog flowing", func() bool { mu.Lock(); defer mu.Unlock(); return aSeen > 5 })
	mu.Lock()
	startAt := aSeen
	mu.Unlock()
	if err := e.log.Append(t.Context(), &events.Event{Type: events.SandboxCreated, TeamID: "b", SandboxID: "bsb"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b's delivery", func() bool { mu.Lock(); defer mu.Unlock(); return bAt >= 0 })
	mu.Lock()
	defer mu.Unlock()
	t.Logf("b's delivery went after %d of a's %d deliveries (%d after b's event)", bAt, n, bAt-startAt)
	// Fan-out and claim take a few of a's deliveries' time; the bound is
	// loose but far below the backlog.
	if waited := bAt - startAt; waited > n/3 {
		t.Errorf("b's one delivery waited for %d of a's backlog of %d: one webhook's backlog starves the others", waited, n)
	}
}
