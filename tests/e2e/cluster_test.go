package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/cluster"
	"github.com/sbxdev/sbx/internal/datadir"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqldb/sqldbtest"
	"github.com/sbxdev/sbx/internal/testenv"
	"github.com/sbxdev/sbx/sdk"
	"github.com/sbxdev/sbx/tests/harness"
)

// clusterDomain routes sandbox host names (<port>-<id>.<domain>).
const clusterDomain = "sbx.test"

// testCluster is one PostgreSQL, api replicas and nodes.
type testCluster struct {
	api    *Server   // the first api replica
	apis   []*Server // every api replica
	nodes  []*Server
	secret string
	dsn    string   // the cluster's PostgreSQL
	common []string // flags every process gets
}

// clusterSpec says what startClusterSpec starts. Later flags win: common
// first, then the role's own.
type clusterSpec struct {
	apis, nodes int
	common      []string // every process
	apiFlags    []string // --role api only
	nodeFlags   []string // --role node only
	// nodeExtra adds flags to one node (by index), after nodeFlags.
	nodeExtra map[int][]string
}

// startCluster starts `sbx serve --role api` and two `--role node` on one
// fresh PostgreSQL database, one blob store and one cluster secret. The
// nodes get the api replica's key files, as an operator copies them; no
// warm pools (two nodes on two shared cores), no snapshot runtime.
func startCluster(t testing.TB, extra ...string) *testCluster {
	t.Helper()
	return startClusterSpec(t, clusterSpec{apis: 1, nodes: 2, common: extra})
}

// startClusterSpec is startCluster with any number of api replicas and
// nodes (named api-N and node-N).
func startClusterSpec(t testing.TB, spec clusterSpec) *testCluster {
	t.Helper()
	testenv.Require(t, testenv.Postgres)
	dsn := sqldbtest.DSN(t, sqldb.Postgres)
	c := &testCluster{secret: "e2e-cluster-secret-0123456789abcdef0123456789", dsn: dsn}
	secretFile := filepath.Join(t.TempDir(), "cluster-secret")
	if err := os.WriteFile(secretFile, []byte(c.secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// One blob store for every process, as a cluster has: template layers,
	// build uploads and paused sandboxes go there.
	common := []string{"--database", dsn, "--cluster-secret-file", secretFile, "--node-grace", "10m", "--domain", clusterDomain,
		"--blob-store", "file://" + filepath.Join(t.TempDir(), "blobs")}
	common = append(common, spec.common...) // later flags win
	c.common = common
	for i := range spec.apis {
		args := append(append([]string{"--role", "api", "--node-name", fmt.Sprintf("api-%d", i+1)}, common...), spec.apiFlags...)
		if i == 0 {
			c.api = StartServer(t, args...)
		} else {
			c.apis = append(c.apis, harness.StartServerPrepared(t, c.copyKeys(t), args...))
			continue
		}
		c.apis = append(c.apis, c.api)
	}
	for i := range spec.nodes {
		n := harness.StartNodeServer(t, c.copyKeys(t), append(append([]string{"--role", "node", "--node-name", nodeName(i),
			"--snapshot-runtime", "none", "--pool", "base=0,code-interpreter=0,*=0"}, common...), append(spec.nodeFlags, spec.nodeExtra[i]...)...)...)
		c.nodes = append(c.nodes, n)
	}
	// The nodes offer themselves once their API serves; the api
	// replicas read them within a refresh.
	offering := tableOffers(t, dsn)
	if slices.Contains(common, "kubernetes") { // --coordination kubernetes: nodes heartbeat to Leases
		offering = leaseOffers(t)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		n := offering()
		if n == len(c.nodes) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d nodes offer themselves after 60 s", n, len(c.nodes))
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(cluster.RefreshEvery + 200*time.Millisecond)
	return c
}

// tableOffers counts the nodes that offer themselves in the nodes table.
func tableOffers(t testing.TB, dsn string) func() int {
	db, err := sqldb.Open(context.Background(), dsn, sqldb.Options{NoMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return func() int {
		var n int
		if err := db.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM nodes WHERE advertise_url <> ''`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
}

// copyKeys gives another process of the cluster the first api replica's
// key files, as an operator copies them (the chart mounts them): one team,
// one API key, one admin key, one key for team secrets.
func (c *testCluster) copyKeys(t testing.TB) func(dir string) {
	return func(dir string) {
		l := datadir.Layout{Root: c.api.DataDir}
		for _, f := range []string{l.APIKey(), l.AdminKey(), l.SecretsKey()} {
			v, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), v, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// nodeName is the --node-name of c.nodes[i].
func nodeName(i int) string { return fmt.Sprintf("node-%d", i+1) }

// nodeOf tells which node runs sandbox id (its container's runtime root).
func (c *testCluster) nodeOf(t testing.TB, id string) int {
	t.Helper()
	for i, n := range c.nodes {
		if _, ok := n.CrunStates(t)[id]; ok {
			return i
		}
	}
	return -1
}

// TestClusterRoles (cluster issue): through one api replica, sandboxes
// are placed on both nodes and every call and sandbox stream reaches the
// node that runs them; the nodes refuse API keys and forged or replayed
// cluster signatures.
func TestClusterRoles(t *testing.T) {
	c := startCluster(t)
	client := c.api.Client(t)

	var sbs []*sdk.Sandbox
	for len(sbs) < 6 {
		s, err := client.Create(opCtx(t), sdk.CreateOptions{Timeout: 10 * time.Minute})
		if err != nil {
			t.Fatalf("create %d through the api replica: %v\napi log:\n%s", len(sbs), err, c.api.Log())
		}
		createdIDs.Store(s.ID, true)
		t.Cleanup(func() { // before the servers stop (cleanups run last first)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := s.Kill(ctx); err != nil && !sdk.IsNotFound(err) {
				t.Errorf("cleanup: kill %s through the api replica: %v", s.ID, err)
			}
		})
		sbs = append(sbs, s)
	}
	on := map[int][]string{}
	for _, s := range sbs {
		i := c.nodeOf(t, s.ID)
		if i < 0 {
			t.Fatalf("sandbox %s runs on no node", s.ID)
		}
		on[i] = append(on[i], s.ID)
	}
	t.Logf("placement: node-1 %d sandboxes, node-2 %d", len(on[0]), len(on[1]))
	if len(on[0]) == 0 || len(on[1]) == 0 {
		t.Errorf("6 sandboxes all went to one node: %v", on)
	}

	// Commands (a stream) and files (an upload and a download) on a
	// sandbox of each node, through the api replica's proxy.
	for i := range c.nodes {
		if len(on[i]) == 0 {
			continue
		}
		var s *sdk.Sandbox
		for _, sb := range sbs {
			if sb.ID == on[i][0] {
				s = sb
			}
		}
		res, err := s.Commands.Run(opCtx(t), "echo hello from $(hostname)", sdk.RunOptions{})
		if err != nil || !strings.HasPrefix(res.Stdout, "hello from") {
			t.Fatalf("command in %s on node-%d: %+v, %v", s.ID, i+1, res, err)
		}
		payload := bytes.Repeat([]byte("sbx cluster "), 200_000) // 2.4 MB: streamed, not buffered
		if _, err := s.Files.Write(opCtx(t), "/tmp/routed.txt", payload); err != nil {
			t.Fatalf("write a file in %s on node-%d: %v", s.ID, i+1, err)
		}
		got, err := s.Files.Read(opCtx(t), "/tmp/routed.txt")
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("read the file back from %s: %d bytes, %v; want %d", s.ID, len(got), err, len(payload))
		}
		if i == 0 {
			checkRoutedStreams(t, c, s, payload)
		}
	}

	// Reads (the database), set-timeout and kill (the owning node).
	victim := sbs[0]
	if err := victim.SetTimeout(opCtx(t), 20*time.Minute); err != nil {
		t.Fatalf("set timeout through the api replica: %v", err)
	}
	list, err := client.List(opCtx(t), sdk.ListOptions{})
	if err != nil || len(list) < len(sbs) {
		t.Fatalf("list through the api replica: %d sandboxes, %v; want %d", len(list), err, len(sbs))
	}
	seen := streamEvents(t, c.api) // written by the node, streamed by the api replica
	if err := victim.Kill(opCtx(t)); err != nil {
		t.Fatalf("kill through the api replica: %v", err)
	}
	waitFor(t, "the killed event on the api replica's stream", func() bool {
		for {
			select {
			case ev := <-seen:
				if ev.SandboxID == victim.ID && ev.Type == "sandbox.lifecycle.killed" {
					return true
				}
			default:
				return false
			}
		}
	})
	if _, err := client.Get(opCtx(t), victim.ID); !sdk.IsNotFound(err) {
		t.Errorf("get a killed sandbox = %v; want not found", err)
	}
	// The container is torn down in the background after the kill answers.
	owner := c.nodes[c.nodeOfKilled(t, victim.ID, on)]
	waitFor(t, "the killed sandbox's container to stop running", func() bool {
		st, ok := owner.CrunStates(t)[victim.ID]
		return !ok || st != "running"
	})

	if r := c.api.Raw(t, http.MethodGet, "/templates", "", map[string]string{"X-API-Key": c.api.APIKey}); r.Status != http.StatusOK ||
		!strings.Contains(r.Body, `"code-interpreter"`) {
		t.Errorf("GET /templates through the api replica = %d %s; want the built-in templates", r.Status, r.Body)
	}
	checkNodeRefusals(t, c, sbs[1])
	runJSThroughAPIReplica(t, c)
}

// runJSThroughAPIReplica: the official E2B JavaScript SDK, pointed at the
// api replica only, creates a sandbox, runs a command and writes and
// reads a file.
func runJSThroughAPIReplica(t *testing.T, c *testCluster) {
	t.Helper()
	module := filepath.Join(harness.RepoRoot(t), "tests", "e2b-js", "node_modules", "e2b", "dist", "index.mjs")
	if _, err := os.Stat(module); err != nil {
		t.Fatalf("the E2B JS SDK is missing (%v): run `make js-deps`", err)
	}
	script := `
const { Sandbox } = await import(process.argv[1])
const sbx = await Sandbox.create('base')
try {
  const r = await sbx.commands.run('echo js-through-api')
  await sbx.files.write('/tmp/js.txt', 'written by js')
  const back = await sbx.files.read('/tmp/js.txt')
  console.log(JSON.stringify({ id: sbx.sandboxId, stdout: r.stdout.trim(), file: back }))
} finally { await sbx.kill() }
`
	cmd := exec.CommandContext(opCtx(t), "node", "--input-type=module", "-e", script, "file://"+module)
	cmd.Env = append(os.Environ(), "E2B_API_URL="+c.api.URL, "E2B_SANDBOX_URL="+c.api.URL, "E2B_API_KEY="+c.api.APIKey)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"stdout":"js-through-api"`) || !strings.Contains(string(out), `"file":"written by js"`) {
		t.Fatalf("E2B JS SDK through the api replica: %v\n%s", err, out)
	}
}

// nodeOfKilled is the node a sandbox was on before it was killed.
func (c *testCluster) nodeOfKilled(t *testing.T, id string, on map[int][]string) int {
	for i, ids := range on {
		for _, x := range ids {
			if x == id {
				return i
			}
		}
	}
	t.Fatalf("sandbox %s was on no node", id)
	return 0
}

// checkNodeRefusals: a node serves requests signed with the cluster
// secret for a team, and nothing else.
func checkNodeRefusals(t *testing.T, c *testCluster, live *sdk.Sandbox) {
	teams, err := c.api.Client(t).ListTeams(opCtx(t))
	if err != nil || len(teams) != 1 {
		t.Fatalf("the team: %+v, %v", teams, err)
	}
	team := teams[0].TeamID
	i := c.nodeOf(t, live.ID)
	node, name := c.nodes[i], nodeName(i)
	otherName := nodeName((i + 1) % len(c.nodes))
	path := "/sandboxes/" + live.ID
	secret, err := cluster.NewSecret(c.secret)
	if err != nil {
		t.Fatal(err)
	}
	signedFor := func(to string, at time.Time, team string) http.Header {
		r, _ := http.NewRequest(http.MethodGet, node.URL+path, nil)
		if err := cluster.NewSigner(secret).SignAt(r, to, team, at); err != nil {
			t.Fatal(err)
		}
		return r.Header
	}
	signed := func(at time.Time, team string) http.Header { return signedFor(name, at, team) }
	send := func(h http.Header) harness.RawResponse {
		m := map[string]string{}
		for k := range h {
			m[k] = h.Get(k)
		}
		return node.Raw(t, http.MethodGet, path, "", m)
	}

	good := signed(time.Now(), team)
	if r := send(good); r.Status != http.StatusOK || !strings.Contains(r.Body, live.ID) {
		t.Fatalf("a signed request to the node = %d %s; want 200 with the sandbox", r.Status, r.Body)
	}
	forged := signed(time.Now(), team)
	forged.Set(cluster.Header, strings.Replace(forged.Get(cluster.Header), "sig=", "sig=00", 1)[:len(forged.Get(cluster.Header))])
	other, _ := cluster.NewSecret("another-cluster-0123456789abcdef0123456789")
	wrongKey, _ := http.NewRequest(http.MethodGet, node.URL+path, nil)
	_ = cluster.NewSigner(other).Sign(wrongKey, name, team)
	otherTeam := signed(time.Now(), team)
	otherTeam.Set(cluster.Header, strings.Replace(otherTeam.Get(cluster.Header), "team="+team, "team=someone-else", 1))

	for _, tc := range []struct {
		name    string
		headers http.Header
		want    string
	}{
		{"the tenant's API key", http.Header{"X-Api-Key": {c.api.APIKey}}, "refuses API keys"},
		{"no credentials", http.Header{}, "must come from an api replica"},
		{"a replay of a used signature", good, "already used"},
		{"an old signature", signed(time.Now().Add(-2*time.Minute), team), "away from this node's clock"},
		{"a forged signature", forged, "does not match"},
		{"another cluster's secret", wrongKey.Header, "does not match"},
		{"a signature moved to another team", otherTeam, "does not match"},
		{"a signature for another node", signedFor(otherName, time.Now(), team), "signed for another node"},
	} {
		r := send(tc.headers)
		if r.Status != http.StatusUnauthorized || !strings.Contains(r.Body, tc.want) {
			t.Errorf("%s straight to a node = %d %s; want 401 saying %q", tc.name, r.Status, r.Body, tc.want)
		}
	}
	// Sandbox traffic straight to a node with the sandbox's own token is
	// refused too: only api replicas reach a node's proxy.
	r := node.Raw(t, http.MethodGet, "/files?path=/etc/hostname", "", map[string]string{"E2b-Sandbox-Id": live.ID, "E2b-Sandbox-Port": "49983",
		"X-Access-Token": live.EnvdAccessToken})
	if r.Status != http.StatusUnauthorized {
		t.Errorf("sandbox traffic straight to a node = %d %s; want 401", r.Status, r.Body)
	}
	if r := node.Raw(t, http.MethodGet, "/health", "", nil); r.Status != http.StatusOK {
		t.Errorf("GET /health on a node = %d; want 200 (probes)", r.Status)
	}
}

// checkRoutedStreams: a terminal, a signed download URL (which names no
// sandbox), host-routed port traffic and the node-side API routes (logs,
// metrics) of a sandbox, all through the api replica.
func checkRoutedStreams(t *testing.T, c *testCluster, s *sdk.Sandbox, file []byte) {
	var mu sync.Mutex
	var out bytes.Buffer
	term, err := s.Pty.Create(opCtx(t), sdk.PtyOptions{OnData: func(b []byte) { mu.Lock(); out.Write(b); mu.Unlock() }})
	if err != nil {
		t.Fatalf("open a terminal through the api replica: %v", err)
	}
	if err := s.Pty.SendInput(opCtx(t), term.PID, []byte("echo pty-$((6*7))\n")); err != nil {
		t.Fatalf("terminal input: %v", err)
	}
	waitFor(t, "the terminal's output", func() bool { mu.Lock(); defer mu.Unlock(); return strings.Contains(out.String(), "pty-42") })
	_ = s.Pty.Kill(opCtx(t), term.PID)

	u, err := s.Files.DownloadURL("/tmp/routed.txt", sdk.FileURLOptions{Expires: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(u, c.api.URL+"/files?") {
		t.Fatalf("download URL %s is not on the api replica %s", u, c.api.URL)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, file) {
		t.Fatalf("GET the signed download URL = %d, %d bytes; want 200 and the %d bytes written", resp.StatusCode, len(got), len(file))
	}

	if _, err := s.Commands.Start(opCtx(t), "mkdir -p /tmp/www && echo served-by-sandbox > /tmp/www/index.html && "+
		"cd /tmp/www && exec python3 -m http.server 8001", sdk.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "host-routed port 8001", func() bool {
		req, _ := http.NewRequestWithContext(opCtx(t), http.MethodGet, c.api.URL+"/index.html", nil)
		req.Host = "8001-" + s.ID + "." + clusterDomain
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && strings.Contains(string(b), "served-by-sandbox")
	})

	for _, path := range []string{"/v2/sandboxes/" + s.ID + "/logs", "/sandboxes/" + s.ID + "/metrics"} {
		if r := c.api.Raw(t, http.MethodGet, path, "", map[string]string{"X-API-Key": c.api.APIKey}); r.Status != http.StatusOK {
			t.Errorf("GET %s through the api replica = %d %s; want 200 (answered by the node)", path, r.Status, r.Body)
		}
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30 s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClusterNodeDown: creates through the api replica keep succeeding
// right after a node dies, before its heartbeat goes stale: a create sent
// to the dead node fails to connect and is placed again on the other.
func TestClusterNodeDown(t *testing.T) {
	c := startCluster(t)
	client := c.api.Client(t)
	c.nodes[1].Stop(syscall.SIGKILL)
	for i := range 4 {
		s, err := client.Create(opCtx(t), sdk.CreateOptions{Timeout: 5 * time.Minute})
		if err != nil {
			t.Fatalf("create %d after node-2 died: %v\napi log:\n%s", i, err, c.api.Log())
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_ = s.Kill(ctx)
		})
		if n := c.nodeOf(t, s.ID); n != 0 {
			t.Errorf("sandbox %s is on node %d; want node-1, the one alive", s.ID, n+1)
		}
	}
	if strings.Contains(c.api.Log(), "trying another") {
		t.Logf("a create went to the dead node and was placed again on node-1")
	}
}

// TestClusterNodesLost: when every node dies, the api replica (which
// campaigns for the sweep with the nodes) records their running
// sandboxes killed with reason node_lost and streams the events.
func TestClusterNodesLost(t *testing.T) {
	c := startCluster(t, "--node-grace", "3s")
	client := c.api.Client(t)
	var ids []string
	for len(ids) < 2 {
		s, err := client.Create(opCtx(t), sdk.CreateOptions{Timeout: 10 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	seen := streamEvents(t, c.api)
	for _, n := range c.nodes {
		n.Stop(syscall.SIGKILL)
	}
	killed := map[string]bool{}
	deadline := time.After(60 * time.Second)
	for len(killed) < len(ids) {
		select {
		case ev := <-seen:
			if ev.Type == "sandbox.lifecycle.killed" && slices.Contains(ids, ev.SandboxID) {
				killed[ev.SandboxID] = true
			}
		case <-deadline:
			t.Fatalf("sandboxes reported killed after both nodes died: %v of %v\napi log:\n%s", killed, ids, c.api.Log())
		}
	}
	for _, id := range ids {
		r := c.api.Raw(t, "GET", "/events/sandboxes/"+id, "", map[string]string{"X-API-Key": c.api.APIKey})
		if !strings.Contains(r.Body, `"node_lost"`) {
			t.Errorf("events of %s: %s; want a kill with reason node_lost", id, r.Body)
		}
	}
}
