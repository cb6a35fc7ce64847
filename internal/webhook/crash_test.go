package webhook

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/events/eventstest"
)

const helperEnv = "SBX_WEBHOOK_HELPER_DB"

// TestHelperEngineProcess is not a test: TestCrashDurability runs the test
// binary with it selected to get an engine in a process it can kill -9.
func TestHelperEngineProcess(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		return // only meaningful as the child process of TestCrashDurability
	}
	db := eventstest.OpenDB(t, path)
	evlog := events.NewLog(db, testLogger(t))
	eng, err := NewEngine(db, evlog, fastConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer cancel()
	_ = eng.Run(ctx)
}

func TestCrashDurability(t *testing.T) {
	if os.Getenv("SBX_TEST_DATABASE") == "postgres" {
		// The child reopens the database by file path. On PostgreSQL the
		// same property is tested with real servers: tests/e2e
		// TestWebhooksAcrossServers.
		t.Skip("the child process reopens a SQLite path; see tests/e2e TestWebhooksAcrossServers")
	}
	t.Parallel()
	e := newEnv(t, fastConfig())
	rc := newReceiver(t, func(int) int {
		time.Sleep(3 * time.Millisecond) // slow enough that deliveries are pending at the kill
		return http.StatusOK
	})
	hook := createHook(t, e.eng, "t", rc.srv.URL)
	const before, during = 150, 150
	appendN := func(from, n int) {
		for i := from; i < from+n; i++ {
			if err := e.log.Append(t.Context(), &events.Event{Type: events.SandboxCreated, TeamID: "t", SandboxID: "sb" + itoa(i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendN(0, before)

	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelperEngineProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+e.path)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	appendN(before, during) // the child's fan-out sees these live
	waitFor(t, "child delivering", func() bool { return len(rc.all()) >= 60 })
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	atKill := len(rc.all())
	if atKill >= before+during {
		t.Fatalf("the child delivered everything (%d) before the kill; the test proves nothing", atKill)
	}

	// A new engine on the same database file finishes the job.
	eng2, err := NewEngine(e.db, e.log, fastConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	run(t, eng2)
	distinct := func() map[string]int {
		seen := map[string]int{}
		for _, d := range rc.all() {
			var b events.JSON
			_ = json.Unmarshal(d.body, &b)
			seen[b.SandboxID]++
		}
		return seen
	}
	waitFor(t, "every event delivered after restart", func() bool { return len(distinct()) == before+during })
	dups := 0
	for _, n := range distinct() {
		dups += n - 1
	}
	waitFor(t, "every delivery recorded as success", func() bool {
		var pending int
		_ = e.db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM webhook_deliveries WHERE webhook_id = ? AND state != 'success'`, hook.ID).Scan(&pending)
		return pending == 0
	})
	var deliveries, attempts int
	_ = e.db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM webhook_deliveries WHERE webhook_id = ?`, hook.ID).Scan(&deliveries)
	_ = e.db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM webhook_attempts WHERE webhook_id = ?`, hook.ID).Scan(&attempts)
	if deliveries != before+during || attempts < deliveries {
		t.Fatalf("deliveries %d (want %d), attempts %d", deliveries, before+during, attempts)
	}
	t.Logf("received %d before the kill; %d requests in all, %d duplicates (at-least-once), %d attempts logged",
		atKill, len(rc.all()), dups, attempts)
}

// TestCrashKeepsSandboxOrder: kill -9 the engine while it delivers
// created and killed events of many sandboxes; the next engine must
// finish without ever sending a sandbox's created after its killed (a
// repeat is allowed, only before the killed): a sandbox's next event
// waits for the previous one's recorded outcome, so a crash can leave
// unrecorded only the latest one sent.
func TestCrashKeepsSandboxOrder(t *testing.T) {
	if os.Getenv("SBX_TEST_DATABASE") == "postgres" {
		t.Skip("the child process reopens a SQLite path; see TestSandboxOrderRestart for both dialects")
	}
	t.Parallel()
	e := newEnv(t, fastConfig())
	rc := newOrderReceiver(t, func(string, int) int {
		time.Sleep(3 * time.Millisecond) // slow enough that deliveries are pending at the kill
		return http.StatusOK
	})
	createHook(t, e.eng, "t", rc.srv.URL)
	const sandboxes = 100
	var evs [][2]string // each sandbox's created and killed next to each other: sent close together
	for i := range sandboxes {
		evs = append(evs, [2]string{"sb" + itoa(i), events.SandboxCreated}, [2]string{"sb" + itoa(i), events.SandboxKilled})
	}
	appendLifecycle(t, e, evs...)

	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelperEngineProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+e.path)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "child delivering", func() bool { return len(rc.snapshot()) >= 2*60 })
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	atKill := len(rc.snapshot()) / 2
	if atKill >= 2*sandboxes {
		t.Fatalf("the child delivered everything (%d) before the kill; the test proves nothing", atKill)
	}
	eng2, err := NewEngine(e.db, e.log, fastConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	run(t, eng2)
	waitFor(t, "every killed delivered", func() bool {
		seen := map[string]bool{}
		for _, s := range rc.snapshot() {
			if strings.HasSuffix(s, "/killed done") {
				seen[s] = true
			}
		}
		return len(seen) == sandboxes
	})
	log := rc.snapshot()
	for i := range sandboxes {
		requireBefore(t, log, "sb"+itoa(i)+"/created done", "sb"+itoa(i)+"/killed")
	}
	t.Logf("%d requests before the kill, %d in all for %d events", atKill, len(log)/2, 2*sandboxes)
}
