package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/blob/blobtest"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/sdk"
	"github.com/sbxdev/sbx/tests/harness"
)

// How many sandboxes the definition-of-done test creates: the 300
// (on the shared 2-core machine the JS SDK made them, with a command, a
// file and every tenth a terminal, in 17 s; docs/cluster.md).
// SBX_DOD_SANDBOXES sets another count.
const dodDefaultSandboxes = 300

// dodNodeLostWithin is the bound: a dead node's sandboxes are
// reported killed node_lost within 30 s (the test's --node-grace is 10 s).
const dodNodeLostWithin = 30 * time.Second

// loadResult is one line of testdata/cluster_dod.mjs.
type loadResult struct {
	I          int     `json:"i"`
	ID         string  `json:"id"`
	API        string  `json:"api"`
	CreateMs   float64 `json:"createMs"`
	FirstCmdMs float64 `json:"firstCmdMs"`
	DoneMs     float64 `json:"doneMs"`
	PTY        bool    `json:"pty"`
	Error      string  `json:"error"`
}

// TestClusterDefinitionOfDone is issue 16's definition of done on one
// machine: PostgreSQL, a shared blob store (SeaweedFS's S3 when weed is
// built here, else a directory), 2 `--role api` and 3 `--role node` processes.
// Through both api replicas the official E2B JS SDK creates many
// sandboxes spread over every node and runs commands, files and terminals
// in them; port traffic is host-routed through both replicas. Then:
//   - kill -9 of a node: its running sandboxes are recorded killed
//     node_lost within 30 s, with signed webhooks; the other nodes'
//     sandboxes keep running and answering; its sandbox paused to disk
//     stays paused and resumes on another node through an api replica,
//     with its files;
//   - kill -9 of an api replica during a burst of creates: each create
//     succeeded or failed with an error, and once the nodes settled every
//     container, network namespace and address lease on them belongs to a
//     running row and every running row has its container.
func TestClusterDefinitionOfDone(t *testing.T) {
	count := dodEnvInt(t, "SBX_DOD_SANDBOXES", dodDefaultSandboxes)
	c := startClusterSpec(t, clusterSpec{apis: 2, nodes: 3,
		common: append(dodBlobStore(t), "--node-grace", "10s", "--webhook-allow-private"),
		// Placement counts a sandbox's CPU limit (2 for base) against
		// cores × overcommit; idle sandboxes use next to none. One team
		// makes them all: no per-team cap.
		nodeFlags: []string{"--cpu-overcommit", "1000", "--team-max-sandboxes", "0"}})
	db, err := sqldb.Open(t.Context(), c.dsn, sqldb.Options{NoMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	const secret = "dod-webhook-secret"
	rcv := newSignedReceiver(t, secret)
	// Kills only: deliveries to one webhook go one at a time in order, so
	// with created events too the node-lost kills would queue behind 300
	// creates (measured: 30 s after the kill instead of 10).
	if r := c.apis[1].Raw(t, http.MethodPost, "/events/webhooks", fmt.Sprintf(`{"name":"dod","url":%q,"events":["sandbox.lifecycle.killed"],"signatureSecret":%q}`,
		rcv.srv.URL, secret), map[string]string{"X-API-Key": c.api.APIKey}); r.Status != http.StatusCreated {
		t.Fatalf("POST /events/webhooks through api-2: %d %s", r.Status, r.Body)
	}

	// Load through both replicas.
	results := runDoDLoad(t, c, count)
	var took time.Duration // until the last sandbox's work was done (node's start-up left out)
	var ids []string
	var create, first []time.Duration
	ptys := 0
	for _, r := range results {
		if r.Error != "" {
			t.Fatalf("sandbox %d through %s: %s", r.I, r.API, r.Error)
		}
		ids = append(ids, r.ID)
		took = max(took, time.Duration(r.DoneMs*float64(time.Millisecond)))
		create = append(create, time.Duration(r.CreateMs*float64(time.Millisecond)))
		first = append(first, time.Duration(r.FirstCmdMs*float64(time.Millisecond)))
		if r.PTY {
			ptys++
		}
	}
	if len(ids) != count {
		t.Fatalf("the load made %d sandboxes; want %d", len(ids), count)
	}
	t.Logf("JS SDK load: %d sandboxes (command, 21 kB file written and read each; %d terminals) in %v, %.1f sandboxes/s, concurrency %d; "+
		"create p50 %v p95 %v, create → first command p50 %v p95 %v; load %s",
		count, ptys, took.Round(time.Millisecond), float64(count)/took.Seconds(), dodConcurrency(t),
		pct(create, 50), pct(create, 95), pct(first, 50), pct(first, 95), loadAvg())

	on := c.placementOf(t, ids)
	for i := range c.nodes {
		t.Logf("node-%d runs %d sandboxes", i+1, len(on[i]))
		if len(on[i]) == 0 {
			t.Fatalf("no sandbox on node-%d: %v", i+1, on)
		}
		routePortTraffic(t, c, on[i][0])
	}

	// A sandbox of node-3 paused to disk (its layers in the blob store).
	const victim = 2
	paused := on[victim][1]
	pauseFS(t, c.apis[1], paused)
	running := slices.DeleteFunc(slices.Clone(on[victim]), func(id string) bool { return id == paused })

	// kill -9 of node-3.
	streamed := collectKills(t, streamEvents(t, c.apis[0]))
	c.nodes[victim].Stop(syscall.SIGKILL)
	died := time.Now()
	dodWait(t, dodNodeLostWithin, fmt.Sprintf("node-3's %d running sandboxes recorded killed node_lost", len(running)), func() (bool, string) {
		st := c.rows(t, db)
		bad := 0
		for _, id := range running {
			if r := st[id]; r.state != "killed" || r.reason != "node_lost" {
				bad++
			}
		}
		return bad == 0, fmt.Sprintf("%d not yet", bad)
	})
	t.Logf("node-3's %d sandboxes recorded node_lost %v after kill -9 (--node-grace 10s)", len(running), time.Since(died).Round(time.Millisecond))
	dodWait(t, dodNodeLostWithin-time.Since(died), "killed webhooks for node-3's sandboxes within 30 s of the kill", func() (bool, string) {
		missing := rcv.missingKilled(t, running, "node_lost")
		return len(missing) == 0, fmt.Sprintf("%d missing, e.g. %v", len(missing), first3(missing))
	})
	t.Logf("webhooks of node-3's sandboxes delivered %v after kill -9", time.Since(died).Round(time.Millisecond))
	dodWait(t, 30*time.Second, "the kills on api-1's event stream", func() (bool, string) {
		missing := streamed.missing(running)
		return len(missing) == 0, fmt.Sprintf("%d missing", len(missing))
	})
	if r := c.rows(t, db)[paused]; r.state != "paused" {
		t.Errorf("the sandbox paused to disk on node-3 is %s (%s) after node-3 died; want paused", r.state, r.reason)
	}
	c.checkOthersUntouched(t, db, on, victim)

	// The paused sandbox resumes on another node through an api replica.
	s, err := c.api.Client(t).Connect(opCtx(t), paused, sdk.ConnectOptions{Timeout: 10 * time.Minute})
	if err != nil {
		t.Fatalf("resume %s (paused to disk on node-3, now dead) through api-1: %v\napi-1 log:\n%s", paused, err, tail(c.api.Log()))
	}
	if n := c.nodeOf(t, s.ID); n != 0 && n != 1 {
		t.Errorf("the resumed sandbox runs on node index %d; want node-1 or node-2", n)
	}
	got, err := s.Files.Read(opCtx(t), "/tmp/dod.txt")
	if err != nil || !strings.HasPrefix(string(got), "file of sandbox ") {
		t.Errorf("the file written before the pause, read after the resume elsewhere: %q, %v", first80(got), err)
	}

	// kill -9 of api-2 during a burst of creates through it.
	c.burstAndKillAPI(t, db, 1)
}

// dodBlobStore is a real S3 server (SeaweedFS) when weed is built here
// (scripts/build-weed.sh; required under SBX_REQUIRE_INTEGRATION=1), else
// a directory every process shares.
func dodBlobStore(t *testing.T) []string {
	if _, err := blobtest.WeedBinary(); err != nil && os.Getenv("SBX_REQUIRE_INTEGRATION") != "1" {
		t.Logf("no SeaweedFS (%v): the blob store is a shared directory (file://)", err)
		return []string{"--blob-store", "file://" + filepath.Join(t.TempDir(), "blobs")}
	}
	weed := blobtest.StartWeed(t)
	keyFile := filepath.Join(t.TempDir(), "s3-secret")
	if err := os.WriteFile(keyFile, []byte(weed.SecretKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("blob store: SeaweedFS S3 at %s", weed.Endpoint)
	return []string{"--blob-store", fmt.Sprintf("s3://%s?endpoint=%s&region=%s", weed.Bucket(t), weed.Endpoint, weed.Region),
		"--blob-s3-access-key", weed.AccessKey, "--blob-s3-secret-key-file", keyFile}
}

// runDoDLoad runs testdata/cluster_dod.mjs against every api replica.
func runDoDLoad(t *testing.T, c *testCluster, count int) []loadResult {
	t.Helper()
	root := harness.RepoRoot(t)
	module := filepath.Join(root, "tests", "e2b-js", "node_modules", "e2b", "dist", "index.mjs")
	if _, err := os.Stat(module); err != nil {
		t.Fatalf("the E2B JS SDK is missing (%v): run `make js-deps`", err)
	}
	var urls []string
	for _, a := range c.apis {
		urls = append(urls, a.URL)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(root, "tests", "e2e", "testdata", "cluster_dod.mjs"), "file://"+module)
	cmd.Env = append(os.Environ(), "API_URLS="+strings.Join(urls, ","), "E2B_API_KEY="+c.api.APIKey,
		"COUNT="+strconv.Itoa(count), "CONCURRENCY="+strconv.Itoa(dodConcurrency(t)), "PTY_EVERY=10")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the JS SDK load: %v\n%s\n%s", err, out, stderr.String())
	}
	var res []loadResult
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r loadResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("a line of the JS load: %v: %s", err, sc.Text())
		}
		res = append(res, r)
	}
	return res
}

func dodConcurrency(t *testing.T) int { return dodEnvInt(t, "SBX_DOD_CONCURRENCY", 8) }

func dodEnvInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// placementOf maps each node (index) to the sandboxes its crun runs.
func (c *testCluster) placementOf(t *testing.T, ids []string) map[int][]string {
	t.Helper()
	where := map[string]int{}
	for i, n := range c.nodes {
		for id := range n.CrunStates(t) {
			where[id] = i
		}
	}
	on := map[int][]string{}
	for _, id := range ids {
		i, ok := where[id]
		if !ok {
			t.Fatalf("sandbox %s runs on no node", id)
		}
		on[i] = append(on[i], id)
	}
	return on
}

// routePortTraffic serves a page from port 8001 of sandbox id and fetches
// it host-routed (<port>-<id>.<domain>) through every api replica.
func routePortTraffic(t *testing.T, c *testCluster, id string) {
	t.Helper()
	s, err := c.api.Client(t).Connect(opCtx(t), id, sdk.ConnectOptions{})
	if err != nil {
		t.Fatalf("connect to %s: %v", id, err)
	}
	if _, err := s.Commands.Start(opCtx(t), "mkdir -p /tmp/www && echo port-of-"+id+" > /tmp/www/index.html && "+
		"cd /tmp/www && exec python3 -m http.server 8001", sdk.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, api := range c.apis {
		waitFor(t, "port 8001 of "+id+" through "+api.URL, func() bool {
			req, _ := http.NewRequestWithContext(opCtx(t), http.MethodGet, api.URL+"/index.html", nil)
			req.Host = "8001-" + id + "." + clusterDomain
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode == http.StatusOK && strings.Contains(string(b), "port-of-"+id)
		})
	}
}

// row is what the checks read of a sandbox row.
type row struct{ node, state, reason, metadata string }

func (c *testCluster) rows(t *testing.T, db *sqldb.DB) map[string]row {
	t.Helper()
	q, err := db.QueryContext(t.Context(), `SELECT id, node_id, state, kill_reason, metadata FROM sandboxes`)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	out := map[string]row{}
	for q.Next() {
		var id string
		var r row
		if err := q.Scan(&id, &r.node, &r.state, &r.reason, &r.metadata); err != nil {
			t.Fatal(err)
		}
		out[id] = r
	}
	if err := q.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkOthersUntouched: the live nodes' sandboxes are still running (row
// and container) and every tenth answers a command through an api
// replica.
func (c *testCluster) checkOthersUntouched(t *testing.T, db *sqldb.DB, on map[int][]string, dead int) {
	t.Helper()
	rows := c.rows(t, db)
	ran := 0
	for i, ids := range on {
		if i == dead {
			continue
		}
		states := c.nodes[i].CrunStates(t)
		for k, id := range ids {
			if r := rows[id]; r.state != "running" || states[id] != "running" {
				t.Errorf("sandbox %s of node-%d: row %s (%s), container %q after node-%d died; want both running",
					id, i+1, r.state, r.reason, states[id], dead+1)
				continue
			}
			if k%10 != 0 {
				continue
			}
			api := c.apis[k%len(c.apis)]
			s, err := api.Client(t).Connect(opCtx(t), id, sdk.ConnectOptions{})
			if err == nil {
				var res *sdk.CommandResult
				res, err = s.Commands.Run(opCtx(t), "echo still-here", sdk.RunOptions{})
				if err == nil && strings.TrimSpace(res.Stdout) != "still-here" {
					err = fmt.Errorf("stdout %q", res.Stdout)
				}
			}
			if err != nil {
				t.Errorf("a command in %s (node-%d) after node-%d died: %v", id, i+1, dead+1, err)
			}
			ran++
		}
	}
	t.Logf("after node-%d died: the other nodes' sandboxes all run; %d answered a command", dead+1, ran)
}

// missingKilled lists the ids the receiver has no killed delivery with
// reason for.
func (r *signedReceiver) missingKilled(t *testing.T, ids []string, reason string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bad) > 0 {
		t.Fatalf("deliveries with invalid signatures or bodies: %v", r.bad)
	}
	got := map[string]bool{}
	for _, ev := range r.events {
		data, _ := ev["eventData"].(map[string]any)
		if ev["type"] == "sandbox.lifecycle.killed" && data["kill_reason"] == reason {
			got[fmt.Sprint(ev["sandboxId"])] = true
		}
	}
	var missing []string
	for _, id := range ids {
		if !got[id] {
			missing = append(missing, id)
		}
	}
	return missing
}

// killSet gathers the sandbox IDs of the killed events an api replica's
// event stream (SSE, which the SDKs follow) sent, read as they come (the
// stream's channel drops what is not read in time).
type killSet struct {
	mu  sync.Mutex
	ids map[string]bool
}

func collectKills(t *testing.T, seen <-chan streamedEvent) *killSet {
	k := &killSet{ids: map[string]bool{}}
	go func() {
		for {
			select {
			case ev := <-seen:
				if ev.Type == "sandbox.lifecycle.killed" {
					k.mu.Lock()
					k.ids[ev.SandboxID] = true
					k.mu.Unlock()
				}
			case <-t.Context().Done():
				return
			}
		}
	}()
	return k
}

func (k *killSet) missing(ids []string) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, id := range ids {
		if !k.ids[id] {
			out = append(out, id)
		}
	}
	return out
}

// dodWait polls ok every 200 ms until it holds or within passes.
func dodWait(t *testing.T, within time.Duration, what string, ok func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		done, state := ok()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v (%s)", what, within, state)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)].Round(time.Millisecond)
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func first3(s []string) []string { return s[:min(3, len(s))] }

func first80(b []byte) string { return string(b[:min(80, len(b))]) }
