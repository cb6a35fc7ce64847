package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/cluster"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/sdk"
)

// clusterNode is what the test reads of GET /nodes and /nodes/{id}.
type clusterNode struct {
	NodeID       string `json:"nodeID"`
	Status       string `json:"status"`
	Version      string `json:"version"`
	SandboxCount int    `json:"sandboxCount"`
	Load         struct {
		CPUMillis         int64 `json:"cpuMillis"`
		ReservedCPUMillis int64 `json:"reservedCpuMillis"`
		MemoryMiB         int64 `json:"memoryMiB"`
	} `json:"load"`
	Sandboxes []struct {
		SandboxID string `json:"sandboxID"`
	} `json:"sandboxes"`
}

// TestClusterObservability (cluster issue, observability of api
// replicas): through a real api replica and two real nodes on
// PostgreSQL, the admin's /nodes lists both nodes with their sandboxes
// from the database; a drain sent to the api replica reaches the node,
// its heartbeat and placement; /metrics of the api replica moves with
// real creates; the dashboard signs in there and shows the cluster.
func TestClusterObservability(t *testing.T) {
	c := startCluster(t)
	admin := map[string]string{"X-API-Key": c.api.AdminKey(t)}
	team := map[string]string{"X-API-Key": c.api.APIKey}
	client := c.api.Client(t)

	nodes := listNodes(t, c, admin)
	if len(nodes) != 2 || nodes[0].Status != "ready" || nodes[1].Status != "ready" || nodes[0].Version == "" || nodes[0].Load.CPUMillis <= 0 {
		t.Fatalf("GET /nodes on the api replica = %+v; want node-1 and node-2 ready, with version and capacity", nodes)
	}
	if r := c.api.Raw(t, http.MethodGet, "/nodes", "", team); r.Status != http.StatusForbidden {
		t.Errorf("GET /nodes with a team key = %d %s; want 403", r.Status, r.Body)
	}
	if r := c.api.Raw(t, http.MethodGet, "/metrics", "", nil); r.Status != http.StatusUnauthorized {
		t.Errorf("GET /metrics without a key = %d; want 401 (no --metrics-public)", r.Status)
	}
	before := c.api.Raw(t, http.MethodGet, "/metrics", "", admin).Body
	if v := promValue(before, "sbx_cluster_nodes", `status="ready"`); v != 2 {
		t.Errorf("sbx_cluster_nodes{status=ready} = %v; want 2\n%s", v, before)
	}

	create := func() *sdk.Sandbox {
		t.Helper()
		s, err := client.Create(opCtx(t), sdk.CreateOptions{Timeout: 10 * time.Minute})
		if err != nil {
			t.Fatalf("create through the api replica: %v\napi log:\n%s", err, c.api.Log())
		}
		createdIDs.Store(s.ID, true)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_ = s.Kill(ctx)
		})
		return s
	}
	on := map[string]string{} // sandbox → node
	for range 4 {
		s := create()
		on[s.ID] = nodeName(c.nodeOf(t, s.ID))
	}
	// Each node's view lists exactly the sandboxes its runtime runs.
	for i := range c.nodes {
		n := getNode(t, c, nodeName(i), admin)
		for _, sb := range n.Sandboxes {
			if on[sb.SandboxID] != n.NodeID {
				t.Errorf("GET /nodes/%s lists %s, which runs on %q", n.NodeID, sb.SandboxID, on[sb.SandboxID])
			}
		}
		want := 0
		for _, node := range on {
			if node == n.NodeID {
				want++
			}
		}
		if len(n.Sandboxes) != want {
			t.Errorf("GET /nodes/%s: %d sandboxes; want %d", n.NodeID, len(n.Sandboxes), want)
		}
	}
	for _, n := range listNodes(t, c, admin) {
		want := 0
		for _, node := range on {
			if node == n.NodeID {
				want++
			}
		}
		if n.SandboxCount != want {
			t.Errorf("GET /nodes: %s has sandboxCount %d; want %d", n.NodeID, n.SandboxCount, want)
		}
	}
	if r := c.api.Raw(t, http.MethodGet, "/nodes/node-9", "", admin); r.Status != http.StatusNotFound {
		t.Errorf("GET /nodes/node-9 = %d; want 404", r.Status)
	}

	// Metrics moved with the creates: placements, HTTP requests, and the
	// cluster's running sandboxes from the database (cached for 2 s).
	dodWait(t, 10*time.Second, "the api replica's metrics to count 4 running sandboxes", func() (bool, string) {
		after := c.api.Raw(t, http.MethodGet, "/metrics", "", admin).Body
		return promValue(after, "sbx_cluster_sandboxes", `state="running"`) == 4, after
	})
	after := c.api.Raw(t, http.MethodGet, "/metrics", "", admin).Body
	for _, m := range []struct{ name, labels string }{
		{"sbx_placement_decisions_total", `result="placed"`},
		{"sbx_placement_decision_seconds_count", ""},
		{"sbx_http_request_duration_seconds_count", `route="POST /v2/sandboxes"`},
	} {
		if d := promValue(after, m.name, m.labels) - promValue(before, m.name, m.labels); d < 4 {
			t.Errorf("%s{%s} moved by %v over 4 creates; want at least 4", m.name, m.labels, d)
		}
	}
	if n := promValue(after, "sbx_placement_decision_seconds_count", ""); n > 0 {
		t.Logf("placement decisions: %v, mean %s", n,
			time.Duration(promValue(after, "sbx_placement_decision_seconds_sum", "")/n*float64(time.Second)).Round(time.Microsecond))
	}
	if promValue(after, "sbx_build_jobs_queued", "") != 0 || !strings.Contains(after, "sbx_build_jobs_queued ") {
		t.Errorf("sbx_build_jobs_queued missing or not 0")
	}

	// Drain node-1 through the api replica: the node and its heartbeat
	// take it, and placement sends every new sandbox to node-2.
	if r := c.api.Raw(t, http.MethodPost, "/nodes/node-1", `{"status":"draining"}`, team); r.Status != http.StatusForbidden {
		t.Errorf("drain with a team key = %d; want 403", r.Status)
	}
	drainAt := time.Now()
	if r := c.api.Raw(t, http.MethodPost, "/nodes/node-1", `{"status":"draining"}`, admin); r.Status != http.StatusNoContent {
		t.Fatalf("drain node-1 through the api replica = %d %s", r.Status, r.Body)
	}
	t.Logf("drain answered (recorded in node-1's heartbeat) in %s", time.Since(drainAt).Round(time.Millisecond))
	db, err := sqldb.Open(t.Context(), c.dsn, sqldb.Options{NoMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var state string
	if err := db.QueryRowContext(t.Context(), `SELECT state FROM nodes WHERE id = 'node-1'`).Scan(&state); err != nil || state != "draining" {
		t.Errorf("node-1's heartbeat row: state %q, %v; want draining", state, err)
	}
	if n := getNode(t, c, "node-1", admin); n.Status != "draining" {
		t.Errorf("GET /nodes/node-1 after the drain: status %q", n.Status)
	}
	for range 4 {
		if s := create(); c.nodeOf(t, s.ID) != 1 {
			t.Errorf("sandbox %s was placed on the draining node-1", s.ID)
		}
	}
	m := c.api.Raw(t, http.MethodGet, "/metrics", "", admin).Body
	if promValue(m, "sbx_cluster_nodes", `status="draining"`) != 1 {
		t.Errorf("sbx_cluster_nodes{status=draining} != 1 after the drain")
	}
	// A drain outlives the node's restart (an upgrade, say): the new
	// process's first heartbeat used to record it ready again.
	c.nodes[0].Stop(syscall.SIGTERM)
	c.nodes[0].Start(t) // answers /health after its first heartbeat
	if err := db.QueryRowContext(t.Context(), `SELECT state FROM nodes WHERE id = 'node-1'`).Scan(&state); err != nil || state != "draining" {
		t.Errorf("node-1's heartbeat row after its restart: state %q, %v; want draining", state, err)
	}
	time.Sleep(1500 * time.Millisecond) // the replica's node list refresh (1 s)
	for range 2 {
		if s := create(); c.nodeOf(t, s.ID) != 1 {
			t.Errorf("sandbox %s was placed on node-1, draining before its restart", s.ID)
		}
	}
	if r := c.api.Raw(t, http.MethodPost, "/nodes/node-1", `{"status":"ready"}`, admin); r.Status != http.StatusNoContent {
		t.Fatalf("make node-1 ready again = %d %s", r.Status, r.Body)
	}

	logViewTimes(t, c, admin)
	checkClusterDashboard(t, c, on)
	checkAdminSignatureScope(t, c)

	// A dead node: shown unhealthy, and calls to its sandboxes count as
	// forward errors for it.
	c.nodes[1].Stop(syscall.SIGKILL)
	var onDead string
	for id, node := range on {
		if node == "node-2" {
			onDead = id
		}
	}
	dodWait(t, 15*time.Second, "node-2 to be shown unhealthy", func() (bool, string) {
		n := getNode(t, c, "node-2", admin)
		return n.Status == "unhealthy", n.Status
	})
	if onDead != "" {
		r := c.api.Raw(t, http.MethodGet, "/sandboxes/"+onDead+"/logs", "", team)
		m := c.api.Raw(t, http.MethodGet, "/metrics", "", admin).Body
		if v := promValue(m, "sbx_cluster_forward_errors_total", `node="node-2"`); v < 1 {
			t.Errorf("logs of %s on the dead node-2 answered %d; sbx_cluster_forward_errors_total{node=node-2} = %v, want ≥ 1", onDead, r.Status, v)
		}
	}
}

func listNodes(t *testing.T, c *testCluster, h map[string]string) []clusterNode {
	t.Helper()
	r := c.api.Raw(t, http.MethodGet, "/nodes", "", h)
	var out []clusterNode
	if r.Status != http.StatusOK || json.Unmarshal([]byte(r.Body), &out) != nil {
		t.Fatalf("GET /nodes = %d %s", r.Status, r.Body)
	}
	return out
}

func getNode(t *testing.T, c *testCluster, id string, h map[string]string) clusterNode {
	t.Helper()
	r := c.api.Raw(t, http.MethodGet, "/nodes/"+id, "", h)
	var out clusterNode
	if r.Status != http.StatusOK || json.Unmarshal([]byte(r.Body), &out) != nil {
		t.Fatalf("GET /nodes/%s = %d %s", id, r.Status, r.Body)
	}
	return out
}

// promValue sums the samples of series name whose labels contain labels
// (the Prometheus text format; "" matches every sample).
func promValue(body, name, labels string) float64 {
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		series, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.Contains(line, "{") {
			series, value, ok = strings.Cut(line, "} ")
			if !ok {
				continue
			}
			series += "}"
		}
		n, lbl, _ := strings.Cut(series, "{")
		if n != name || !strings.Contains(lbl, labels) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// checkClusterDashboard signs in to the api replica's dashboard over
// HTTP: a team key sees its sandboxes of both nodes and their events live
// from the events table; the admin key sees the nodes.
func checkClusterDashboard(t *testing.T, c *testCluster, on map[string]string) {
	t.Helper()
	team := dashboardSession(t, c.api.URL, c.api.APIKey)
	var list []struct {
		SandboxID string `json:"sandboxID"`
	}
	if err := json.Unmarshal(team.get(t, "/dashboard/api/v2/sandboxes?state=running,paused&limit=100"), &list); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, sb := range list {
		seen[on[sb.SandboxID]] = true
	}
	if !seen["node-1"] || !seen["node-2"] {
		t.Errorf("the dashboard lists %d sandboxes, on nodes %v; want sandboxes of node-1 and node-2", len(list), seen)
	}
	// Live: a sandbox created now reaches the dashboard's event stream.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.api.URL+"/dashboard/api/events/stream", nil)
	req.Header.Set("X-CSRF-Token", team.csrf)
	resp, err := team.client.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("dashboard event stream: %v %v", resp, err)
	}
	defer resp.Body.Close()
	s, err := c.api.Client(t).Create(opCtx(t), sdk.CreateOptions{Timeout: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	createdIDs.Store(s.ID, true)
	t.Cleanup(func() { _ = s.Kill(context.Background()) })
	sc := bufio.NewScanner(resp.Body)
	found := false
	for !found && sc.Scan() {
		found = strings.HasPrefix(sc.Text(), "data: ") && strings.Contains(sc.Text(), s.ID) && strings.Contains(sc.Text(), "sandbox.lifecycle.created")
	}
	if !found {
		t.Errorf("the dashboard's event stream on the api replica never showed %s created (%v)", s.ID, sc.Err())
	}

	adm := dashboardSession(t, c.api.URL, c.api.AdminKey(t))
	var nodes []clusterNode
	if err := json.Unmarshal(adm.get(t, "/dashboard/api/nodes"), &nodes); err != nil || len(nodes) != 2 {
		t.Errorf("the admin's dashboard lists nodes %+v, %v; want 2", nodes, err)
	}
	if page := string(adm.get(t, "/dashboard/nodes.js")); !strings.Contains(page, "/nodes/") {
		t.Errorf("the dashboard's nodes page script is missing")
	}
}

type dashSession struct {
	client *http.Client
	base   string
	csrf   string
}

func dashboardSession(t *testing.T, base, key string) *dashSession {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	d := &dashSession{client: &http.Client{Jar: jar}, base: base}
	resp, err := d.client.Post(base+"/dashboard/session", "application/json", strings.NewReader(fmt.Sprintf(`{"apiKey":%q}`, key)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s struct {
		CSRFToken string `json:"csrfToken"`
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &s) != nil {
		t.Fatalf("dashboard sign-in on the api replica = %d %s", resp.StatusCode, b)
	}
	d.csrf = s.CSRFToken
	return d
}

func (d *dashSession) get(t *testing.T, path string) []byte {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, d.base+path, nil)
	req.Header.Set("X-CSRF-Token", d.csrf)
	resp, err := d.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("dashboard GET %s = %d %s", path, resp.StatusCode, b)
	}
	return b
}

// checkAdminSignatureScope: a request signed for the cluster admin (as an
// api replica signs the admin's node calls) reaches a node's /nodes/{id}
// routes and its kill of a team's sandboxes only, never a team's routes.
func checkAdminSignatureScope(t *testing.T, c *testCluster) {
	t.Helper()
	s, err := cluster.NewSecret(c.secret)
	if err != nil {
		t.Fatal(err)
	}
	signer := cluster.NewSigner(s)
	node := c.nodes[0]
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/nodes/node-1", http.StatusOK},
		{http.MethodGet, "/v2/sandboxes", http.StatusForbidden},
		{http.MethodGet, "/nodes", http.StatusForbidden},
		{http.MethodPost, "/admin/teams/x/builds/cancel", http.StatusForbidden},
		{http.MethodDelete, "/teams/x", http.StatusForbidden},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), tc.method, node.URL+tc.path, nil)
		if err := signer.Sign(req, "node-1", cluster.AdminTeam); err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s at a node, signed for the cluster admin = %d; want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
	}
}

// logViewTimes reports how long the admin's views and a scrape take on
// the api replica (figures for docs/observability.md; nothing asserted).
func logViewTimes(t *testing.T, c *testCluster, admin map[string]string) {
	for _, path := range []string{"/nodes", "/nodes/node-2", "/metrics"} {
		var d []time.Duration
		for range 20 {
			at := time.Now()
			c.api.Raw(t, http.MethodGet, path, "", admin)
			d = append(d, time.Since(at))
		}
		slices.Sort(d)
		t.Logf("GET %s on the api replica (2 nodes, load %s): p50 %s, p95 %s", path, loadAvg(),
			d[len(d)/2].Round(10*time.Microsecond), d[len(d)*95/100].Round(10*time.Microsecond))
	}
}
