package webhook

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/events"
)

// inFlightReceiver is a real HTTP endpoint that counts the requests it is
// serving at once and calls handle for each.
type inFlightReceiver struct {
	srv               *httptest.Server
	now, most, served atomic.Int64
	mu                sync.Mutex
	got               map[string]int // sandbox id → requests
}

func newInFlightReceiver(t *testing.T, handle func(w http.ResponseWriter, r *http.Request)) *inFlightReceiver {
	t.Helper()
	rc := &inFlightReceiver{got: map[string]int{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := rc.now.Add(1)
		defer rc.now.Add(-1)
		for m := rc.most.Load(); n > m && !rc.most.CompareAndSwap(m, n); m = rc.most.Load() {
		}
		var ev events.JSON
		_ = json.NewDecoder(r.Body).Decode(&ev)
		rc.mu.Lock()
		rc.got[ev.SandboxID]++
		rc.mu.Unlock()
		handle(w, r)
		rc.served.Add(1)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *inFlightReceiver) distinct() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.got)
}

func appendEvents(t *testing.T, e *env, team, prefix string, n int) {
	t.Helper()
	tx, err := e.db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := e.log.AppendTx(t.Context(), tx, &events.Event{Type: events.SandboxCreated, TeamID: team, SandboxID: prefix + itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	e.log.Notify()
}

// TestSlowReceiverConcurrency: a receiver taking 200 ms per request gets
// a webhook's backlog PerWebhook requests at a time, never more, each
// event once.
func TestSlowReceiverConcurrency(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		perWebhook, n int
	}{
		{1, 4},
		{8, 40},
	} {
		t.Run("per-webhook="+itoa(tt.perWebhook), func(t *testing.T) {
			t.Parallel()
			cfg := fastConfig()
			cfg.Workers, cfg.PerWebhook = 16, tt.perWebhook
			e := newEnv(t, cfg)
			rc := newInFlightReceiver(t, func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(200 * time.Millisecond)
				w.WriteHeader(http.StatusNoContent)
			})
			createHook(t, e.eng, "t", rc.srv.URL)
			run(t, e.eng)
			appendEvents(t, e, "t", "sb", tt.n)
			waitFor(t, "every event delivered", func() bool { return rc.served.Load() >= int64(tt.n) })
			if got := rc.most.Load(); got != int64(tt.perWebhook) {
				t.Errorf("at most %d requests in flight at the receiver, want %d", got, tt.perWebhook)
			}
			if d := rc.distinct(); d != tt.n || rc.served.Load() != int64(tt.n) {
				t.Errorf("%d requests for %d distinct events, want %d each once", rc.served.Load(), d, tt.n)
			}
		})
	}
}

// TestBadHookDoesNotDelayHealthy: a webhook whose endpoint hangs (until
// the test ends) or fails holds at most its share of the workers and
// none of another webhook's deliveries: the healthy webhook gets all of
// its events while the hanging one has not finished a single request.
func TestBadHookDoesNotDelayHealthy(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		hang bool
	}{
		{"hangs", true},
		{"fails", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := fastConfig()
			cfg.Workers, cfg.PerWebhook = 4, 4 // one of the four is the reserve
			cfg.Timeout = 30 * time.Second     // the hanging one holds its workers all along
			e := newEnv(t, cfg)
			release := make(chan struct{})
			bad := newInFlightReceiver(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.hang {
					select {
					case <-release:
					case <-r.Context().Done():
					}
				}
				w.WriteHeader(http.StatusInternalServerError)
			})
			good := newInFlightReceiver(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
			createHook(t, e.eng, "bad", bad.srv.URL)
			createHook(t, e.eng, "good", good.srv.URL)
			stop := run(t, e.eng)
			defer stop()
			defer close(release) // before stop: Run waits for the hanging sends
			appendEvents(t, e, "bad", "bad", 20)
			if tt.hang {
				want := int64(cfg.Workers - cfg.reserve())
				waitFor(t, "the bad webhook's workers busy", func() bool { return bad.now.Load() == want })
			} else {
				waitFor(t, "the bad webhook failing", func() bool { return bad.served.Load() >= 20 })
			}
			appendEvents(t, e, "good", "good", 10)
			waitFor(t, "the healthy webhook's events", func() bool { return good.served.Load() >= 10 })
			if tt.hang {
				if n := bad.served.Load(); n != 0 {
					t.Errorf("the hanging endpoint answered %d requests; the test proves nothing", n)
				}
				if m := bad.most.Load(); m > int64(cfg.Workers-cfg.reserve()) {
					t.Errorf("the hanging webhook held %d workers; the reserve is %d of %d", m, cfg.reserve(), cfg.Workers)
				}
			}
		})
	}
}

// TestInFlightRedeliveredAfterStop: deliveries in flight when the engine
// stops whose requests fail (here the connection is cut as the engine
// stops) stay pending, and the next engine on the database sends them
// again: each event is delivered, those cut short twice, and every
// delivery ends recorded as a success. (A kill -9 mid-send is
// TestCrashDurability.)
func TestInFlightRedeliveredAfterStop(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.Workers, cfg.PerWebhook = 4, 4
	e := newEnv(t, cfg)
	stopping := make(chan struct{})
	var cut atomic.Bool
	var held atomic.Int64
	rc := newInFlightReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		if !cut.Load() {
			held.Add(1)
			<-stopping
			panic(http.ErrAbortHandler) // the connection drops: no answer
		}
		w.WriteHeader(http.StatusOK)
	})
	hook := createHook(t, e.eng, "t", rc.srv.URL)
	stop := run(t, e.eng)
	const n = 6
	appendEvents(t, e, "t", "sb", n)
	want := int64(cfg.Workers - cfg.reserve())
	waitFor(t, "deliveries in flight", func() bool { return held.Load() == want })
	cut.Store(true)
	close(stopping)
	stop()

	eng2, err := NewEngine(e.db, e.log, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	run(t, eng2)
	waitFor(t, "every event delivered", func() bool { return rc.distinct() == n })
	waitFor(t, "every delivery recorded as a success", func() bool {
		var pending int
		_ = e.db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM webhook_deliveries WHERE webhook_id = ? AND state != 'success'`, hook.ID).Scan(&pending)
		return pending == 0
	})
	rc.mu.Lock()
	defer rc.mu.Unlock()
	twice := 0
	for id, c := range rc.got {
		switch c {
		case 1:
		case 2:
			twice++
		default:
			t.Errorf("%s sent %d times", id, c)
		}
	}
	if int64(twice) != want {
		t.Errorf("%d events sent twice, want the %d cut short", twice, want)
	}
	var attempts int
	_ = e.db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM webhook_attempts WHERE webhook_id = ?`, hook.ID).Scan(&attempts)
	if attempts != n+int(want) {
		t.Errorf("%d attempts logged, want %d", attempts, n+int(want))
	}
}
