package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestClusterAdminTeamRoutes (cluster issue: any api replica serves any
// call): through a real api replica in front of two real nodes on
// PostgreSQL, the admin kills team A's sandboxes spread over both nodes
// (every one gone from its node's runtime, recorded killed with reason
// admin in its events, team B's untouched) and cancels team A's builds:
// a queued one ends at once, the two the nodes run stop at their next
// claim renewal. The api replica serves usage and budgets from the shared
// database and answers the node-local metrics history with what to do.
// Last, a sandbox paused with its memory on a node that is then killed
// answers a connect with a 412 that says the node is gone.
func TestClusterAdminTeamRoutes(t *testing.T) {
	// One build at a time per node: of three builds, two run, one queues.
	c := startClusterSpec(t, clusterSpec{apis: 1, nodes: 2, nodeFlags: []string{"--build-concurrency", "1"}})
	admin := map[string]string{"X-API-Key": c.api.AdminKey(t)}
	newTeam := func(name string) (id string, h map[string]string) {
		r := c.api.Raw(t, http.MethodPost, "/teams", fmt.Sprintf(`{"name":%q}`, name), admin)
		var tm struct{ TeamID, APIKey string }
		if r.Status != http.StatusCreated && r.Status != http.StatusOK || json.Unmarshal([]byte(r.Body), &tm) != nil || tm.APIKey == "" {
			t.Fatalf("POST /teams = %d %s", r.Status, r.Body)
		}
		return tm.TeamID, map[string]string{"X-API-Key": tm.APIKey}
	}
	teamA, keyA := newTeam("admin-a")
	teamB, keyB := newTeam("admin-b")
	create := func(h map[string]string) string {
		r := c.api.Raw(t, http.MethodPost, "/sandboxes", `{"templateID":"base","timeout":600}`, h)
		var sb struct{ SandboxID string }
		if r.Status != http.StatusCreated || json.Unmarshal([]byte(r.Body), &sb) != nil {
			t.Fatalf("create through the api replica = %d %s", r.Status, r.Body)
		}
		createdIDs.Store(sb.SandboxID, true)
		return sb.SandboxID
	}
	onA, onB := map[string]int{}, map[string]int{}
	nodesA := map[int]bool{}
	for i := 0; i < 8 && (len(onA) < 4 || len(nodesA) < 2); i++ {
		id := create(keyA)
		onA[id] = c.nodeOf(t, id)
		nodesA[onA[id]] = true
	}
	if len(nodesA) < 2 {
		t.Fatalf("team A's sandboxes all landed on one node: %v", onA)
	}
	for range 2 {
		id := create(keyB)
		onB[id] = c.nodeOf(t, id)
	}

	// Builds of team A: three started, each a long RUN step.
	var builds []string
	for i := range 3 {
		r := c.api.Raw(t, http.MethodPost, "/v3/templates", fmt.Sprintf(`{"name":"admin-cancel-%d"}`, i), keyA)
		var tb struct{ TemplateID, BuildID string }
		if r.Status != http.StatusAccepted || json.Unmarshal([]byte(r.Body), &tb) != nil {
			t.Fatalf("POST /v3/templates = %d %s", r.Status, r.Body)
		}
		r = c.api.Raw(t, http.MethodPost, "/v2/templates/"+tb.TemplateID+"/builds/"+tb.BuildID,
			`{"fromTemplate":"base","steps":[{"type":"RUN","args":["sleep 300"]}]}`, keyA)
		if r.Status != http.StatusAccepted {
			t.Fatalf("start build = %d %s", r.Status, r.Body)
		}
		builds = append(builds, "/templates/"+tb.TemplateID+"/builds/"+tb.BuildID+"/status")
	}
	buildStatus := func(path string) string {
		r := c.api.Raw(t, http.MethodGet, path, "", keyA)
		var st struct{ Status string }
		_ = json.Unmarshal([]byte(r.Body), &st)
		return st.Status
	}
	// Both nodes claim one build each (their log says "claimed by node").
	dodWait(t, 60*time.Second, "both nodes to claim a build", func() (bool, string) {
		claimed := 0
		for _, p := range builds {
			r := c.api.Raw(t, http.MethodGet, strings.Replace(p, "/status", "/logs", 1), "", keyA)
			if strings.Contains(r.Body, "claimed by node") {
				claimed++
			}
		}
		return claimed == 2, fmt.Sprintf("%d claimed", claimed)
	})

	// The admin's team routes through the api replica.
	r := c.api.Raw(t, http.MethodPost, "/admin/teams/"+teamA+"/sandboxes/kill", "", keyA)
	if r.Status != http.StatusForbidden {
		t.Errorf("the admin's kill with a team key = %d; want 403", r.Status)
	}
	at := time.Now()
	r = c.api.Raw(t, http.MethodPost, "/admin/teams/"+teamA+"/sandboxes/kill", "", admin)
	var kill struct{ KilledCount, FailedCount int }
	if r.Status != http.StatusOK || json.Unmarshal([]byte(r.Body), &kill) != nil || kill.KilledCount != len(onA) || kill.FailedCount != 0 {
		t.Fatalf("POST /admin/teams/A/sandboxes/kill through the api replica = %d %s; want %d killed", r.Status, r.Body, len(onA))
	}
	t.Logf("admin kill of %d sandboxes on 2 nodes through the api replica: %s", len(onA), time.Since(at).Round(time.Millisecond))
	for id, n := range onA {
		// The kill answers once the sandbox's processes are gone; its
		// container is removed by the teardown that follows.
		waitFor(t, fmt.Sprintf("the container of team A's sandbox %s on node-%d to go", id, n+1), func() bool {
			_, ok := c.nodes[n].CrunStates(t)[id]
			return !ok
		})
		r := c.api.Raw(t, http.MethodGet, "/sandboxes/"+id+"/usage", "", keyA)
		var u struct{ State, KillReason string }
		if r.Status != http.StatusOK || json.Unmarshal([]byte(r.Body), &u) != nil || u.State != "killed" || u.KillReason != "admin" {
			t.Errorf("GET /sandboxes/%s/usage through the api replica (from its lifecycle events) = %d %s; want killed, reason admin", id, r.Status, r.Body)
		}
	}
	for id, n := range onB {
		if _, ok := c.nodes[n].CrunStates(t)[id]; !ok {
			t.Errorf("sandbox %s of team B lost its container on node-%d", id, n+1)
		}
		if r := c.api.Raw(t, http.MethodGet, "/sandboxes/"+id, "", keyB); r.Status != http.StatusOK || !strings.Contains(r.Body, `"running"`) {
			t.Errorf("team B's sandbox %s after the kill of team A = %d %s", id, r.Status, r.Body)
		}
	}

	r = c.api.Raw(t, http.MethodPost, "/admin/teams/"+teamA+"/builds/cancel", "", admin)
	var cancel struct{ CancelledCount, FailedCount int }
	if r.Status != http.StatusOK || json.Unmarshal([]byte(r.Body), &cancel) != nil || cancel.CancelledCount != 3 {
		t.Fatalf("POST /admin/teams/A/builds/cancel through the api replica = %d %s; want 3 cancelled", r.Status, r.Body)
	}
	queued := 0
	for _, p := range builds {
		if buildStatus(p) == "error" {
			queued++ // the queued one ended at once
		}
	}
	if queued != 1 {
		t.Errorf("%d builds ended at once; want the queued one", queued)
	}
	at = time.Now()
	dodWait(t, 40*time.Second, "the nodes to stop the running builds", func() (bool, string) {
		var sts []string
		for _, p := range builds {
			sts = append(sts, buildStatus(p))
		}
		return !strings.Contains(strings.Join(sts, " "), "building"), strings.Join(sts, " ")
	})
	t.Logf("running builds stopped %s after the cancel (claim renewal every 10 s)", time.Since(at).Round(100*time.Millisecond))
	t.Logf("a cancelled build's status: %s", c.api.Raw(t, http.MethodGet, builds[0], "", keyA).Body)

	// Usage and budgets from the shared database; the history of several
	// sandboxes is node-local and says so.
	if r := c.api.Raw(t, http.MethodGet, "/usage", "", keyB); r.Status != http.StatusOK || !strings.Contains(r.Body, `"groups"`) {
		t.Errorf("GET /usage through the api replica = %d %s", r.Status, r.Body)
	}
	if r := c.api.Raw(t, http.MethodGet, "/analytics/summary", "", keyB); r.Status != http.StatusOK {
		t.Errorf("GET /analytics/summary through the api replica = %d %s", r.Status, r.Body)
	}
	if r := c.api.Raw(t, http.MethodPut, "/teams/"+teamB+"/budget", `{"maxConcurrent":5}`, admin); r.Status != http.StatusOK {
		t.Errorf("PUT /teams/B/budget through the api replica = %d %s", r.Status, r.Body)
	}
	r = c.api.Raw(t, http.MethodGet, "/teams/me/budget", "", keyB)
	var bud struct {
		MaxConcurrent int
		Status        struct{ Concurrent int }
	}
	if r.Status != http.StatusOK || json.Unmarshal([]byte(r.Body), &bud) != nil || bud.MaxConcurrent != 5 || bud.Status.Concurrent != len(onB) {
		t.Errorf("GET /teams/me/budget through the api replica = %d %s; want maxConcurrent 5, concurrent %d (both nodes)", r.Status, r.Body, len(onB))
	}
	if r := c.api.Raw(t, http.MethodGet, "/teams/"+teamB+"/metrics", "", keyB); r.Status != http.StatusPreconditionFailed ||
		!strings.Contains(r.Body, "GET /sandboxes/{sandboxID}/metrics") {
		t.Errorf("GET /teams/B/metrics through the api replica = %d %s; want 412 naming what to do", r.Status, r.Body)
	}

	// A sandbox paused with its memory whose node dies.
	var paused string
	var pausedOn int
	for id, n := range onB {
		paused, pausedOn = id, n
	}
	if r := c.api.Raw(t, http.MethodPost, "/sandboxes/"+paused+"/pause", "", keyB); r.Status != http.StatusNoContent {
		t.Fatalf("pause = %d %s", r.Status, r.Body)
	}
	c.nodes[pausedOn].Stop(syscall.SIGKILL)
	r = c.api.Raw(t, http.MethodPost, "/sandboxes/"+paused+"/connect", `{"timeout":60}`, keyB)
	if r.Status != http.StatusPreconditionFailed || !strings.Contains(r.Body, "is gone") || strings.Contains(r.Body, "pause it there") {
		t.Errorf("connect to a sandbox paused with its memory on a dead node = %d %s; want 412 saying the node is gone", r.Status, r.Body)
	}
}
