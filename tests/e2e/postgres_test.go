package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/datadir"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqldb/sqldbtest"
	"github.com/sbxdev/sbx/internal/testenv"
	"github.com/sbxdev/sbx/internal/webhook"
	"github.com/sbxdev/sbx/sdk"
	"github.com/sbxdev/sbx/tests/harness"
)

// startPair starts two `sbx serve` processes on one fresh PostgreSQL
// database, each with its own data dir and node name. The second gets the
// first one's key files, as an operator adding a server copies them.
func startPair(t *testing.T, extra ...string) (a, b *Server) {
	t.Helper()
	a, b, _ = startPairDSN(t, extra...)
	return a, b
}

// startPairDSN is startPair that also returns the database's URL.
func startPairDSN(t *testing.T, extra ...string) (a, b *Server, dsn string) {
	t.Helper()
	testenv.Require(t, testenv.Postgres)
	dsn = sqldbtest.DSN(t, sqldb.Postgres)
	// A server these tests kill stays down for a while: not long enough
	// to be declared lost unless a test asks (TestNodeLost).
	extra = append([]string{"--node-grace", "10m"}, extra...)
	a = StartServer(t, append([]string{"--database", dsn, "--node-name", "node-a"}, extra...)...)
	b = harness.StartServerPrepared(t, func(dir string) {
		for _, f := range []string{datadir.Layout{Root: a.DataDir}.APIKey(), datadir.Layout{Root: a.DataDir}.AdminKey()} {
			v, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), v, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}, append([]string{"--database", dsn, "--node-name", "node-b"}, extra...)...)
	if a.APIKey != b.APIKey {
		t.Fatalf("the servers serve different first teams: %s, %s", a.APIKey, b.APIKey)
	}
	return a, b, dsn
}

// TestTwoServersOnePostgres: two servers sharing one PostgreSQL database
// list each other's sandboxes, stream each other's events, see keys revoked
// through the other at once, and a restart of one never touches the
// other's sandboxes.
func TestTwoServersOnePostgres(t *testing.T) {
	a, b, dsn := startPairDSN(t)
	ca, cb := a.Client(t), b.Client(t)

	// An SSE client on B, live from now.
	seen := streamEvents(t, b)

	start := time.Now()
	sa := create(t, ca, sdk.CreateOptions{Timeout: 10 * time.Minute})
	created := time.Now()
	select {
	case ev := <-seen:
		for ev.SandboxID != sa.ID || ev.Type != "sandbox.lifecycle.created" {
			ev = <-seen
		}
		t.Logf("server B streamed the creation on A %v after A answered (create took %v)", time.Since(created), created.Sub(start))
	case <-time.After(30 * time.Second):
		t.Fatalf("server B's event stream never showed sandbox %s created on A", sa.ID)
	}
	sb := create(t, cb, sdk.CreateOptions{Timeout: 10 * time.Minute})

	for _, c := range []*sdk.Client{ca, cb} {
		list, err := c.List(opCtx(t), sdk.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, s := range list {
			ids = append(ids, s.SandboxID)
		}
		if !slices.Contains(ids, sa.ID) || !slices.Contains(ids, sb.ID) {
			t.Errorf("a list shows %v, want both %s (on A) and %s (on B)", ids, sa.ID, sb.ID)
		}
	}

	// A key made and revoked through A works, then stops working, on B.
	key, err := ca.CreateAPIKey(opCtx(t), "shared")
	if err != nil {
		t.Fatal(err)
	}
	if code := b.Raw(t, "GET", "/sandboxes", "", map[string]string{"X-API-Key": key.Key}).Status; code != http.StatusOK {
		t.Fatalf("key made through A: B answers %d", code)
	}
	if err := ca.DeleteAPIKey(opCtx(t), key.ID, false); err != nil {
		t.Fatal(err)
	}
	// B drops its cached key on A's notification; the cache's own expiry
	// (half a second) is the backstop, so allow a few seconds here.
	revoked := time.Now()
	for b.Raw(t, "GET", "/sandboxes", "", map[string]string{"X-API-Key": key.Key}).Status != http.StatusUnauthorized {
		if time.Since(revoked) > 5*time.Second {
			t.Fatal("a key revoked through A still works on B")
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("B refused the key revoked through A %v after the revocation", time.Since(revoked))

	// B dies hard and restarts: A's sandbox is untouched and still works,
	// B's own are reattached or, if lost meanwhile, recorded as killed.
	checkRestartStaysOnItsNode(t, b, a, sb, sa, dsn)
}

// checkRestartStaysOnItsNode: a server's start-up recovery touches only
// its own node's sandboxes, whatever else shares the machine and the
// database. restarting (node "node-b") runs mine, other runs theirs.
//
//   - A third server pointed at restarting's data dir while it runs is
//     refused before it reads anything there: one data dir holds one
//     server's runtime state, sandboxes and network namespaces, and a
//     second server's recovery would take them all for its own orphans.
//   - restarting is SIGKILLed; meanwhile one of its sandboxes loses its
//     container (stale row), and a server started on its data dir under
//     another node name leaves the containers the database gives to
//     node-b alone.
//   - restarting comes back: other's sandbox ran commands throughout and
//     its container and network namespace are untouched; mine is
//     reattached; the stale one is recorded as killed, as before.
func checkRestartStaysOnItsNode(t *testing.T, restarting, other *Server, mine, theirs *sdk.Sandbox, dsn string) {
	t.Helper()
	cm := restarting.Client(t)
	stale := create(t, cm, sdk.CreateOptions{Timeout: 10 * time.Minute})
	run := func(sbx *sdk.Sandbox, what string) {
		t.Helper()
		res, err := sbx.Commands.Run(opCtx(t), "cat /sys/class/net/eth0/operstate", sdk.RunOptions{})
		if err != nil || strings.TrimSpace(res.Stdout) != "up" {
			t.Fatalf("%s: sandbox %s answers %+v, %v; want its network up", what, sbx.ID, res, err)
		}
	}
	run(theirs, "before the restart")

	// A second server on the same data dir stops at once, naming the
	// holder. (Before data dirs were locked it served, and its recovery
	// removed every container there as an orphan of its own.)
	ictx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	intruder := exec.CommandContext(ictx, restarting.Bin, "serve", "--listen", harness.FreeAddr(t),
		"--data-dir", restarting.DataDir, "--database", dsn, "--node-name", "node-x")
	out, err := intruder.CombinedOutput()
	run(mine, "after a second server tried its server's data dir")
	if err == nil || ictx.Err() != nil || !strings.Contains(string(out), "in use by another sbx server") {
		t.Fatalf("a second server on a running server's data dir: %v\n%s\nwant it refused at once", err, out)
	}
	if strings.Contains(string(out), mine.ID) {
		t.Errorf("the refused server looked at sandbox %s:\n%s", mine.ID, out)
	}

	restarting.Stop(syscall.SIGKILL)
	root := filepath.Join(restarting.DataDir, "runtime", "crun")
	if out, err := exec.Command("crun", "--root", root, "delete", "-f", stale.ID).CombinedOutput(); err != nil {
		t.Fatalf("remove the container of %s behind its server's back: %v: %s", stale.ID, err, out)
	}
	// Under another node name (a changed --listen port changes the
	// default one) the server must not take node-b's containers for
	// orphans: the database says who runs them.
	extra := slices.Clone(restarting.Extra)
	i := slices.Index(restarting.Extra, "--node-name")
	restarting.Extra[i+1] = "node-b-renamed"
	restarting.Start(t)
	restarting.Stop(syscall.SIGTERM)
	restarting.Extra = extra
	renamed := restarting.Log()
	for line := range strings.SplitSeq(renamed, "\n") {
		if strings.Contains(line, "removing orphaned sandbox container") && strings.Contains(line, mine.ID) {
			t.Fatalf("a server under another node name removed node-b's sandbox %s: %s", mine.ID, line)
		}
	}
	if !strings.Contains(renamed, "leaving alone a sandbox container the database gives to another node") {
		t.Errorf("the renamed server did not say it left node-b's containers alone")
	}

	restarting.Start(t)
	run(theirs, "after the restart, through its own server")
	run(mine, "reattached after the restart")
	if got, err := cm.Get(opCtx(t), stale.ID); err == nil && got.State != "killed" {
		t.Errorf("the sandbox whose container was lost reads %+v after the restart; want it killed", got)
	}
	if strings.Contains(restarting.Log(), theirs.ID) {
		t.Errorf("the restarted server's log names the other node's sandbox %s: its recovery looked at it", theirs.ID)
	}
	if !slices.Contains(other.CrunContainers(t), theirs.ID) {
		t.Errorf("the other node's container %s is gone from its runtime", theirs.ID)
	}
	for _, p := range []string{filepath.Join(other.DataDir, "sandboxes", theirs.ID), filepath.Join(other.DataDir, "netns", theirs.ID)} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("the other node's %s: %v", p, err)
		}
	}
	list, err := cm.List(opCtx(t), sdk.ListOptions{State: []string{sdk.StateRunning}})
	if err != nil {
		t.Fatal(err)
	}
	var running []string
	for _, s := range list {
		running = append(running, s.SandboxID)
	}
	if !slices.Contains(running, theirs.ID) || !slices.Contains(running, mine.ID) || slices.Contains(running, stale.ID) {
		t.Fatalf("after the restart the running sandboxes are %v; want %s (untouched) and %s (reattached), not %s (lost)",
			running, theirs.ID, mine.ID, stale.ID)
	}
}

type streamedEvent struct {
	Type      string `json:"type"`
	SandboxID string `json:"sandboxId"`
}

// streamEvents follows GET /events/stream of srv until the test ends.
func streamEvents(t *testing.T, srv *Server) <-chan streamedEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/events/stream", nil)
	req.Header.Set("X-API-Key", srv.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /events/stream: %s", resp.Status)
	}
	// Room for every event of the biggest test (300 creates, their kills
	// and more): an event dropped here would look like one the server
	// never sent.
	out := make(chan streamedEvent, 1<<14)
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var ev streamedEvent
			if json.Unmarshal([]byte(data), &ev) == nil {
				select {
				case out <- ev:
				default: // never with this buffer; reporting here could outlive the test
				}
			}
		}
	}()
	return out
}

// TestWebhooksAcrossServers: a webhook registered through one server
// receives each of 2,000 events exactly once while the server holding its
// delivery queue is SIGKILLed and restarted midway; the restarted server
// takes its queue back and sends what was pending, retries included. The
// only repeats allowed are the deliveries sent but not yet recorded at the
// kill: at most webhook.DefaultPerWebhook deliveries of a webhook are in
// flight at a time, and at most webhook.RecordLag more await their record.
func TestWebhooksAcrossServers(t *testing.T) {
	a, b, dsn := startPairDSN(t, "--webhook-allow-private")
	const n = 2000
	var mu sync.Mutex
	got := map[string]int{}
	var order []string
	var first, last, killed time.Time
	dupsBeforeKill := 0
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			ID   string `json:"id"`
			Type string `json:"type"`
		}
		if err := json.NewDecoder(r.Body).Decode(&ev); err == nil && ev.Type == "sandbox.lifecycle.updated" {
			mu.Lock()
			if first.IsZero() {
				first = time.Now()
			}
			last = time.Now()
			got[ev.ID]++
			order = append(order, ev.ID)
			if got[ev.ID] > 1 && killed.IsZero() {
				dupsBeforeKill++
			}
			mu.Unlock()
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(recv.Close)
	body := fmt.Sprintf(`{"name":"across","url":%q,"events":["sandbox.lifecycle.updated"],"signatureSecret":"0123456789abcdef0123"}`, recv.URL)
	if resp := b.Raw(t, "POST", "/events/webhooks", body, map[string]string{"X-API-Key": b.APIKey}); resp.Status != http.StatusCreated {
		t.Fatalf("POST /events/webhooks through B: %d %s", resp.Status, resp.Body)
	}
	// A sandbox on each server: events are written through the one that
	// does not hold the webhook's queue, which is then killed.
	sbx := map[string]*sdk.Sandbox{
		"node-a": create(t, a.Client(t), sdk.CreateOptions{Timeout: 10 * time.Minute}),
		"node-b": create(t, b.Client(t), sdk.CreateOptions{Timeout: 10 * time.Minute}),
	}
	db, err := sqldb.Open(t.Context(), dsn, sqldb.Options{NoMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	holder := func() string {
		var node string
		_ = db.QueryRowContext(t.Context(), `SELECT lease_node FROM webhooks WHERE lease_until > ?`, time.Now().UnixNano()).Scan(&node)
		return node
	}
	event := func(s *sdk.Sandbox, i int) error {
		if err := s.SetTimeout(context.Background(), 10*time.Minute+time.Duration(i)*time.Second); err != nil {
			return fmt.Errorf("event %d: %w", i, err)
		}
		return nil
	}
	i := 1
	for ; i <= 100; i++ {
		if err := event(sbx["node-b"], i); err != nil {
			t.Fatal(err)
		}
	}
	var node string
	for deadline := time.Now().Add(20 * time.Second); node == ""; time.Sleep(20 * time.Millisecond) {
		if node = holder(); node == "" && time.Now().After(deadline) {
			t.Fatal("no server took the webhook's queue")
		}
	}
	victim, via := a, sbx["node-b"]
	if node == "node-b" {
		victim, via = b, sbx["node-a"]
	}
	t.Logf("%s holds the webhook's queue; events go through the other server", node)
	var restarted sync.WaitGroup
	var wg sync.WaitGroup
	var next atomic.Int64
	next.Store(int64(i - 1))
	for range 4 {
		wg.Go(func() {
			for i := next.Add(1); i <= n; i = next.Add(1) {
				if err := event(via, int(i)); err != nil {
					t.Error(err)
					return
				}
				if i == n/2 {
					victim.Stop(syscall.SIGKILL)
					mu.Lock()
					killed = time.Now()
					mu.Unlock()
					restarted.Go(func() { victim.Start(t) })
				}
			}
		})
	}
	wg.Wait()
	restarted.Wait()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		mu.Lock()
		distinct := len(got)
		mu.Unlock()
		if distinct >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the receiver got %d of %d events", distinct, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Every delivery is recorded as sent, once: the unique key allows one
	// row per (webhook, event).
	var rows, pending int
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_ = db.QueryRowContext(t.Context(), `SELECT COUNT(*), COUNT(CASE WHEN state != 'success' THEN 1 END) FROM webhook_deliveries WHERE event_type = 'sandbox.lifecycle.updated'`).Scan(&rows, &pending)
		if pending == 0 || time.Now().After(deadline) {
			break
		}
	}
	time.Sleep(200 * time.Millisecond) // a late duplicate would arrive about now
	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for _, c := range got {
		dups += c - 1
	}
	t.Logf("%d events delivered, %d repeated (in flight at the kill), %.0f deliveries/s from the first to the last (the restart included)",
		len(got), dups, float64(len(order))/last.Sub(first).Seconds())
	if len(got) != n {
		t.Errorf("received %d distinct events, want %d", len(got), n)
	}
	if rows != n || pending != 0 {
		t.Errorf("%d delivery rows (want %d), %d not sent", rows, n, pending)
	}
	if dupsBeforeKill > 0 {
		t.Errorf("%d duplicate deliveries before the kill: two servers sent the same deliveries", dupsBeforeKill)
	}
	// At most the webhook's deliveries in flight (webhook.DefaultPerWebhook)
	// and those awaiting their record at the kill (webhook.RecordLag) come
	// again.
	if dups > webhook.RecordLag+webhook.DefaultPerWebhook {
		t.Errorf("%d deliveries came twice; only the %d at most in flight and the %d at most awaiting their record at the kill may",
			dups, webhook.DefaultPerWebhook, webhook.RecordLag)
	}
}
