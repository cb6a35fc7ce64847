package webhook

import (
	"container/heap"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/events"
)

// orderReceiver is a real HTTP endpoint that logs, in order, when each
// request arrives ("sb/type") and when it is answered ("sb/type done"),
// and lets a test decide each answer (and delay it).
type orderReceiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	log    []string
	answer func(key string, n int) int // n: how many requests for key so far, this one included
	counts map[string]int
}

func newOrderReceiver(t *testing.T, answer func(key string, n int) int) *orderReceiver {
	t.Helper()
	rc := &orderReceiver{answer: answer, counts: map[string]int{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev events.JSON
		_ = json.NewDecoder(r.Body).Decode(&ev)
		key := ev.SandboxID + "/" + shortType(ev.Type)
		rc.mu.Lock()
		rc.counts[key]++
		n := rc.counts[key]
		rc.log = append(rc.log, key)
		rc.mu.Unlock()
		status := http.StatusOK
		if rc.answer != nil {
			status = rc.answer(key, n)
		}
		rc.mu.Lock()
		rc.log = append(rc.log, key+" done")
		rc.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func shortType(t string) string {
	switch t {
	case events.SandboxCreated:
		return "created"
	case events.SandboxKilled:
		return "killed"
	}
	return t
}

func (rc *orderReceiver) snapshot() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.log)
}

func (rc *orderReceiver) has(entry string) bool { return slices.Contains(rc.snapshot(), entry) }

// requireBefore fails unless a's last occurrence in the log precedes b's first.
func requireBefore(t *testing.T, log []string, a, b string) {
	t.Helper()
	ib, last := slices.Index(log, b), -1
	for i, s := range log {
		if s == a {
			last = i
		}
	}
	if last < 0 || ib < 0 || last > ib {
		t.Fatalf("want every %q before the first %q; log: %v", a, b, log)
	}
}

func appendLifecycle(t *testing.T, e *env, evs ...[2]string) {
	t.Helper()
	tx, err := e.db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if err := e.log.AppendTx(t.Context(), tx, &events.Event{Type: ev[1], TeamID: "t", SandboxID: ev[0]}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	e.log.Notify()
}

// TestSandboxOrderSlowEvent: the receiver holds a's created until b's
// killed has arrived. a's killed must not be sent meanwhile (before the
// fix it went at once, concurrently, and arrived first), while b's events,
// another sandbox, are delivered in the meantime.
func TestSandboxOrderSlowEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fastConfig())
	release := make(chan struct{})
	var rc *orderReceiver
	rc = newOrderReceiver(t, func(key string, n int) int {
		switch key {
		case "a/created":
			select {
			case <-release:
			case <-time.After(20 * time.Second):
			}
		case "b/killed":
			close(release)
		}
		return http.StatusOK
	})
	createHook(t, e.eng, "t", rc.srv.URL)
	run(t, e.eng)
	appendLifecycle(t, e, [2]string{"a", events.SandboxCreated}, [2]string{"a", events.SandboxKilled},
		[2]string{"b", events.SandboxCreated}, [2]string{"b", events.SandboxKilled})
	waitFor(t, "a's killed", func() bool { return rc.has("a/killed done") })
	log := rc.snapshot()
	requireBefore(t, log, "b/killed", "a/created done") // b went while a's created was held
	requireBefore(t, log, "a/created done", "a/killed")
	requireBefore(t, log, "b/created done", "b/killed")
}

// TestSandboxOrderRetry: a's created fails twice and then succeeds; its
// killed waits for that success, while b's events go meanwhile. c's
// created fails every attempt: once it is given up on, c's killed goes.
func TestSandboxOrderRetry(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	e := newEnv(t, cfg)
	rc := newOrderReceiver(t, func(key string, n int) int {
		switch {
		case key == "a/created" && n <= 2, key == "c/created":
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	createHook(t, e.eng, "t", rc.srv.URL)
	run(t, e.eng)
	appendLifecycle(t, e, [2]string{"a", events.SandboxCreated}, [2]string{"a", events.SandboxKilled},
		[2]string{"c", events.SandboxCreated}, [2]string{"c", events.SandboxKilled},
		[2]string{"b", events.SandboxCreated}, [2]string{"b", events.SandboxKilled})
	count := func(key string) int {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		return rc.counts[key]
	}
	waitFor(t, "every killed, and every attempt of a's and c's created", func() bool {
		return rc.has("a/killed done") && rc.has("b/killed done") && rc.has("c/killed done") &&
			count("a/created") >= 3 && count("c/created") >= 1+len(cfg.RetrySchedule)
	})
	log := rc.snapshot()
	requireBefore(t, log, "a/created done", "a/killed")
	requireBefore(t, log, "c/created done", "c/killed")
	if i, j := slices.Index(log, "b/killed done"), slices.Index(log, "a/killed"); i > j {
		t.Fatalf("b waited for a's retries; log: %v", log)
	}
	aCreated, cCreated := count("a/created"), count("c/created")
	if aCreated != 3 || cCreated != 1+len(cfg.RetrySchedule) {
		t.Fatalf("a's created sent %d times (want 3), c's %d (want %d)", aCreated, cCreated, 1+len(cfg.RetrySchedule))
	}
}

// TestSandboxOrderRestart: a's created fails and waits for a retry far
// off; the server stops and another (another node name, a fresh memory)
// takes the queue over. a's killed is due at once, its created later: the
// new holder must still send created first, decided from the database.
func TestSandboxOrderRestart(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.RetrySchedule = []time.Duration{1500 * time.Millisecond, 20 * time.Millisecond}
	cfgA, cfgB := cfg, cfg
	cfgA.Node, cfgB.Node = "node-a", "node-b"
	e := newEnv(t, cfgA)
	var failing atomic.Bool // a's created fails while set
	failing.Store(true)
	rc := newOrderReceiver(t, func(key string, n int) int {
		if key == "a/created" && failing.Load() {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	hook := createHook(t, e.eng, "t", rc.srv.URL)
	stop := run(t, e.eng)
	appendLifecycle(t, e, [2]string{"a", events.SandboxCreated}, [2]string{"a", events.SandboxKilled},
		[2]string{"b", events.SandboxCreated})
	waitFor(t, "a's created failed once and b delivered", func() bool {
		var attempts int
		_ = e.db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM webhook_attempts WHERE webhook_id = ?`, hook.ID).Scan(&attempts)
		return rc.has("b/created done") && attempts >= 2
	})
	stop()
	if rc.has("a/killed") {
		t.Fatalf("a's killed sent while its created waited for a retry; log: %v", rc.snapshot())
	}
	failing.Store(false)

	engB, err := NewEngine(e.db, e.log, cfgB, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	run(t, engB)
	waitFor(t, "a's killed after the restart", func() bool { return rc.has("a/killed done") })
	requireBefore(t, rc.snapshot(), "a/created done", "a/killed")
}

// TestEnginesShareSandboxOrder: two engines (two servers) share the
// database and one stops halfway, its queues going to the other; every
// webhook still gets each sandbox's created before its killed.
func TestEnginesShareSandboxOrder(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.Timeout, cfg.Lease = 300*time.Millisecond, time.Second
	cfgA, cfgB := cfg, cfg
	cfgA.Node, cfgB.Node = "node-a", "node-b"
	e := newEnv(t, cfgA)
	const hooks, sandboxes = 3, 60
	rc := newReceiver(t, func(int) int {
		time.Sleep(time.Millisecond) // created and killed would overlap without the order
		return http.StatusOK
	})
	for range hooks {
		createHook(t, e.eng, "t", rc.srv.URL)
	}
	engB, err := NewEngine(e.db, e.log, cfgB, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	stopA := run(t, e.eng)
	run(t, engB)
	for i := range sandboxes {
		appendLifecycle(t, e, [2]string{"sb" + itoa(i), events.SandboxCreated}, [2]string{"sb" + itoa(i), events.SandboxKilled})
		if i == sandboxes/2 {
			stopA()
		}
	}
	waitFor(t, "every delivery", func() bool { return len(rc.all()) >= hooks*2*sandboxes })
	killed := map[string]bool{} // webhook id + sandbox → its killed has arrived
	for _, d := range rc.all() {
		var b events.JSON
		_ = json.Unmarshal(d.body, &b)
		key := d.header.Get("e2b-webhook-id") + "/" + b.SandboxID
		switch b.Type {
		case events.SandboxKilled:
			killed[key] = true
		case events.SandboxCreated:
			if killed[key] {
				t.Fatalf("%s: created arrived after killed", key)
			}
		}
	}
}

// TestSandboxQueue walks one sandbox's queue through its cases: an earlier
// delivery arriving after a later one takes the head back until the later
// one has started; later ones wait; a recorded outcome moves the head on;
// a head leaving memory unsent takes those behind it along.
func TestSandboxQueue(t *testing.T) {
	e := newEnv(t, fastConfig())
	eng := e.eng
	eng.mu.Lock()
	defer eng.mu.Unlock()
	mk := func(id string, seq int64) *item {
		it := &item{id: id, webhookID: "w", sandbox: "sb", seq: seq, maxAttempts: 1}
		eng.known[id] = it
		return it
	}
	head := func() string { return eng.lanes["w"].sandboxes["sb"].head.id }
	steps := []struct {
		name    string
		do      func() bool // reports whether the step's delivery may be scheduled
		want    bool
		head    string
		waiting int
	}{
		{"first goes", func() bool { return eng.admitOrdered(mk("e10", 10)) }, true, "e10", 0},
		{"queue it", func() bool { eng.waiting.put(eng.known["e10"]); return true }, true, "e10", 1},
		{"an earlier one takes the head back", func() bool { return eng.admitOrdered(mk("e5", 5)) }, true, "e5", 0},
		{"queue it", func() bool { eng.waiting.put(eng.known["e5"]); return true }, true, "e5", 1},
		{"a later one waits", func() bool { return eng.admitOrdered(mk("e20", 20)) }, false, "e5", 1},
		{"in flight", func() bool { heap.Remove(&eng.waiting, 0); eng.known["e5"].where = inFlight; return true }, true, "e5", 0},
		{"an earlier one waits behind one in flight", func() bool { return eng.admitOrdered(mk("e3", 3)) }, false, "e5", 0},
		{"recorded: the next, in event order", func() bool { eng.advance("w", "sb", "e5"); return true }, true, "e3", 1},
		{"unrelated record changes nothing", func() bool { eng.advance("w", "sb", "e10"); return true }, true, "e3", 1},
	}
	for _, s := range steps {
		if got := s.do(); got != s.want || head() != s.head || len(eng.waiting) != s.waiting {
			t.Fatalf("%s: got %v, head %s, %d waiting; want %v, %s, %d", s.name, got, head(), len(eng.waiting), s.want, s.head, s.waiting)
		}
	}
	eng.dropOrdered(eng.known["e3"])
	if _, ok := eng.lanes["w"].sandboxes["sb"]; ok {
		t.Fatal("the sandbox's queue outlived its dropped head")
	}
	for _, id := range []string{"e10", "e20"} {
		if _, ok := eng.known[id]; ok {
			t.Fatalf("%s, held behind a dropped head, is still known: it could go before it", id)
		}
	}
}
