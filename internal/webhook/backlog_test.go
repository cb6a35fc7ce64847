package webhook

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sbxdev/sbx/internal/events"
)

// TestBacklogBoundedUnrecorded: a webhook's backlog goes out with at most
// PerWebhook requests in flight at once (in event order when that is one),
// and whenever a delivery arrives at most RecordLag of those before it,
// plus those in flight beside it, may be unrecorded: what a kill -9 at
// that moment could make the next holder of the queue send again.
func TestBacklogBoundedUnrecorded(t *testing.T) {
	t.Parallel()
	for _, perWebhook := range []int{1, 3} {
		t.Run("per-webhook="+itoa(perWebhook), func(t *testing.T) {
			t.Parallel()
			testBacklogBoundedUnrecorded(t, perWebhook)
		})
	}
}

func testBacklogBoundedUnrecorded(t *testing.T, perWebhook int) {
	cfg := fastConfig()
	cfg.PerWebhook = perWebhook
	e := newEnv(t, cfg)
	const n = 400
	var mu sync.Mutex
	var order []string
	var inFlight, maxInFlight, worstLag atomic.Int64
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c := inFlight.Add(1); c > maxInFlight.Load() {
			maxInFlight.Store(c)
		}
		defer inFlight.Add(-1)
		var ev events.JSON
		_ = json.NewDecoder(r.Body).Decode(&ev)
		// Read the count and append under one lock: with several requests
		// in flight, a count read before another handler appends would
		// look like a lag that is not there.
		mu.Lock()
		var recorded int64
		if err := e.db.QueryRowContext(r.Context(), `SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'success'`).Scan(&recorded); err != nil {
			t.Error(err)
		}
		if lag := int64(len(order)) - recorded; lag > worstLag.Load() {
			worstLag.Store(lag)
		}
		order = append(order, ev.SandboxID)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(recv.Close)
	createHook(t, e.eng, "t", recv.URL)
	// The backlog is in the log before the engine starts.
	tx, err := e.db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := e.log.AppendTx(t.Context(), tx, &events.Event{Type: events.SandboxCreated, TeamID: "t", SandboxID: "sb" + itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	run(t, e.eng)
	waitFor(t, "the backlog delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order) >= n
	})
	mu.Lock()
	defer mu.Unlock()
	for i, id := range order {
		if id != "sb"+itoa(i) && perWebhook == 1 {
			t.Fatalf("delivery %d is %s: out of order", i, id)
		}
	}
	if len(order) != n {
		t.Fatalf("%d deliveries, want %d", len(order), n)
	}
	if m := maxInFlight.Load(); m > int64(perWebhook) {
		t.Errorf("%d requests of one webhook in flight at once, want at most %d", m, perWebhook)
	}
	if w := worstLag.Load(); w > RecordLag+int64(perWebhook)-1 {
		t.Errorf("a delivery went with %d others unrecorded; RecordLag is %d, %d in flight at once", w, RecordLag, perWebhook)
	}
	t.Logf("worst lag %d of %d allowed; %d in flight at most", worstLag.Load(), RecordLag+perWebhook-1, maxInFlight.Load())
}
