package webhook

import (
	"cmp"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/events/eventstest"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/testenv"
	sig "github.com/sbxdev/sbx/sdk/webhook"
)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("SBX_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// fastConfig retries quickly so tests take milliseconds, not hours.
func fastConfig() Config {
	return Config{
		AllowPrivate:  true,
		Workers:       4,
		Timeout:       2 * time.Second,
		RetrySchedule: []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond},
		Jitter:        -1,
	}
}

type env struct {
	db   *sqldb.DB
	path string
	log  *events.Log
	eng  *Engine
}

// newEnv makes a database, an event log and an engine (not running).
func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	db, path := eventstest.TempDB(t)
	evlog := events.NewLog(db, testLogger(t))
	eng, err := NewEngine(db, evlog, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return &env{db: db, path: path, log: evlog, eng: eng}
}

// run starts the engine until the test ends (or stop is called).
func run(t testing.TB, eng *Engine) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Error("engine did not stop within 30s")
			}
		})
	}
	t.Cleanup(stop)
	// Wait until Run has loaded state, so Test calls see a running engine.
	for i := 0; ; i++ {
		eng.mu.Lock()
		r := eng.running
		eng.mu.Unlock()
		if r {
			break
		}
		if i > 1000 {
			t.Fatal("engine did not start")
		}
		time.Sleep(time.Millisecond)
	}
	return stop
}

type received struct {
	header http.Header
	body   []byte
	at     time.Time
}

// receiver is a real HTTP endpoint on 127.0.0.1 that records deliveries
// and answers with status(n) for the n-th request (1-based).
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	got    []received
	status func(n int) int
	notify chan struct{}
}

func newReceiver(t testing.TB, status func(n int) int) *receiver {
	t.Helper()
	rc := &receiver{status: status, notify: make(chan struct{}, 1)}
	if rc.status == nil {
		rc.status = func(int) int { return http.StatusOK }
	}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, received{header: r.Header.Clone(), body: body, at: time.Now()})
		n := len(rc.got)
		rc.mu.Unlock()
		select {
		case rc.notify <- struct{}{}:
		default:
		}
		w.WriteHeader(rc.status(n))
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) all() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

// waitFor polls cond until it holds or 20 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// bySeq returns the deliveries in event order, as a receiver orders them:
// by the sbx-event-seq header (deliveries to one webhook run concurrently,
// so they arrive in any order).
func bySeq(t testing.TB, got []received) []received {
	t.Helper()
	out := append([]received(nil), got...)
	for i := range out {
		if n, err := strconv.ParseInt(out[i].header.Get(sig.HeaderEventSeq), 10, 64); err != nil || n <= 0 {
			t.Fatalf("delivery without a valid %s header: %q", sig.HeaderEventSeq, out[i].header.Get(sig.HeaderEventSeq))
		}
	}
	slices.SortStableFunc(out, func(a, b received) int {
		return cmp.Compare(eventSeqOf(a), eventSeqOf(b))
	})
	return out
}

func eventSeqOf(r received) int64 {
	n, _ := strconv.ParseInt(r.header.Get(sig.HeaderEventSeq), 10, 64)
	return n
}

func ptr[T any](v T) *T { return &v }

func createHook(t testing.TB, eng *Engine, team, url string, types ...string) *Webhook {
	t.Helper()
	if len(types) == 0 {
		types = []string{events.SandboxCreated, events.SandboxKilled}
	}
	w, err := eng.Create(context.Background(), team, Input{
		Name: ptr("test hook"), URL: ptr(url), Events: &types, SignatureSecret: ptr("s3cret-" + team),
	})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func requireIntegration(t testing.TB, what string) {
	t.Helper()
	testenv.Skip(t, "%s unavailable", what)
}

func strconvItoa(i int) string { return strconv.Itoa(i) }

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
