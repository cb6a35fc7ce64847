package security

// Attacks on E2B's wider API surface (issue 13): template names, sandbox
// logs, build logs. Each runs against a real `sbx serve`.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// TestTemplateNameCannotShadowAnID: team B names its template after team
// A's template ID. Where A's template is not registered (its first build
// still running, or deleted), lookups by that ID found B's template by
// name: A's creates by its own ID started B's (published) template, with
// A's env vars, and A could no longer read or delete its own template.
func TestTemplateNameCannotShadowAnID(t *testing.T) {
	s := startServer(t)
	alice := bldTenant{s, s.APIKey}
	bob := bldTenant{s, s.CreateTeam(t, "shadow-b-"+randHex(t, 3))}
	victimID, _ := alice.requestBuild(t, "victim-"+randHex(t, 3)) // waiting: not registered yet

	for _, try := range []struct{ path, body string }{
		{"/v3/templates", `{"name":"` + victimID + `"}`},
		{"/v2/templates", `{"alias":"` + victimID + `"}`},
		{"/templates", `{"alias":"` + victimID + `","dockerfile":"FROM base\nRUN echo bob > /bob\n"}`},
	} {
		r := s.Raw(t, "POST", try.path, try.body, keyHeader(bob.key))
		if r.Status == http.StatusConflict {
			continue
		}
		if r.Status != http.StatusAccepted {
			t.Fatalf("POST %s naming a template after another team's ID = %d %s, want 409", try.path, r.Status, r.Body)
		}
		// Accepted: finish the attack to show what it does.
		var out struct{ TemplateID, BuildID string }
		decodeJSON(t, r, &out)
		var st, said string
		if try.path != "/templates" {
			st, said = bob.build(t, out.TemplateID, out.BuildID, map[string]any{"steps": []any{bldRun("echo bob > /tmp/bob")}})
		} else {
			st, said = bob.waitBuild(t, out.TemplateID, out.BuildID)
		}
		if st != "ready" {
			t.Fatalf("POST %s accepted a template named after another team's ID; its build: %s %s", try.path, st, bldAround(said, "error"))
		}
		if r := bob.call(t, "PATCH", "/templates/"+out.TemplateID, map[string]any{"public": true}); r.Status != http.StatusOK {
			t.Fatalf("bob publishing his template = %d %s", r.Status, r.Body)
		}
		got := alice.call(t, "POST", "/sandboxes", map[string]any{"templateID": victimID, "envVars": map[string]string{"SECRET": "alice"}})
		if got.Status == http.StatusCreated {
			var sb struct{ SandboxID, TemplateID string }
			_ = json.Unmarshal([]byte(got.Body), &sb)
			alice.call(t, "DELETE", "/sandboxes/"+sb.SandboxID, nil)
		}
		own := alice.call(t, "GET", "/templates/"+victimID, nil)
		t.Fatalf("POST %s let team B name a template %s, team A's template ID: A creating a sandbox from its own ID = %d %s; "+
			"A reading its own template = %d %s", try.path, victimID, got.Status, got.Body, own.Status, own.Body)
	}
	if r := alice.call(t, "GET", "/templates/"+victimID, nil); r.Status != http.StatusOK {
		t.Errorf("team A reading its own template %s = %d %s", victimID, r.Status, r.Body)
	}
	// The owner may still use a name that merely looks like an ID.
	if r := s.Raw(t, "POST", "/v3/templates", `{"name":"z`+randHex(t, 8)+`abc"}`, keyHeader(bob.key)); r.Status != http.StatusAccepted {
		t.Errorf("a fresh ID-shaped name = %d %s, want 202", r.Status, r.Body)
	}
}

// TestStartCommandLogIsBoundedInBytes: a template's start command prints
// 2000 lines of 4 KiB before it is ready. The host keeps a start
// command's output in memory for the logs API, for every live sandbox and
// for 10 minutes after each kill: a tenant creating and killing such
// sandboxes in a loop must not hold megabytes of host memory per sandbox.
func TestStartCommandLogIsBoundedInBytes(t *testing.T) {
	s := startServer(t)
	c := bldTenant{s, s.APIKey}
	tid, bid := c.requestBuild(t, "floodlog-"+randHex(t, 3))
	flood := `yes "$(printf '%04000d' 7)" | head -n 2000; touch /tmp/flooded; exec sleep infinity`
	st, said := c.build(t, tid, bid, map[string]any{"steps": []any{}, "startCmd": flood, "readyCmd": "test -f /tmp/flooded", "noSnapshot": true})
	if st != "ready" {
		t.Fatalf("build with a flooding start command: %s %s", st, bldAround(said, "error"))
	}
	r := c.call(t, "POST", "/sandboxes", map[string]any{"templateID": tid})
	if r.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var sb struct{ SandboxID string }
	decodeJSON(t, r, &sb)

	r = c.call(t, "GET", "/v2/sandboxes/"+sb.SandboxID+"/logs?limit=1000", nil)
	var logs struct {
		Logs []struct {
			Message string            `json:"message"`
			Fields  map[string]string `json:"fields"`
		} `json:"logs"`
	}
	decodeJSON(t, r, &logs)
	kept, lines := 0, 0
	for _, e := range logs.Logs {
		if e.Fields["source"] == "start-command" {
			kept += len(e.Message)
			lines++
		}
	}
	if lines == 0 {
		t.Fatalf("the start command's output is not in the log: %.500s", r.Body)
	}
	if kept > startLogBudget {
		t.Errorf("the host keeps %d bytes (%d lines) of one sandbox's start-command output; want at most %d", kept, lines, startLogBudget)
	}
}

// startLogBudget is what one sandbox's start-command log may hold in the
// host's memory (internal/sandbox maxLogBytes).
const startLogBudget = 256 << 10

// TestBuildLogQueriesAreBoundedInMemory: a build's RUN step prints 20,000
// lines of 4 KiB (the most a build keeps: 80 MB in the database). Each
// query of its logs answers at most 100 lines; it must not load all of
// them into the server's memory, or a few concurrent queries cost the
// host gigabytes.
func TestBuildLogQueriesAreBoundedInMemory(t *testing.T) {
	s := startServer(t)
	c := bldTenant{s, s.APIKey}
	tid, bid := c.requestBuild(t, "floodbuild-"+randHex(t, 3))
	st, said := c.build(t, tid, bid, map[string]any{"steps": []any{bldRun(`yes "$(printf '%04000d' 7)" | head -n 20000`)}})
	if st != "ready" {
		t.Fatalf("build: %s %s", st, bldAround(said, "error"))
	}
	pid := s.Pid()
	// Reset the server's peak resident size, then query concurrently.
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Fatalf("reset the server's peak RSS: %v", err)
	}
	base := peakRSS(t, pid)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dir := []string{"forward", "backward"}[i%2]
			r := c.call(t, "GET", "/templates/"+tid+"/builds/"+bid+"/logs?level=error&direction="+dir, nil)
			if r.Status != http.StatusOK {
				t.Errorf("build logs: %d %.300s", r.Status, r.Body)
			}
		}()
	}
	wg.Wait()
	grew := peakRSS(t, pid) - base
	t.Logf("the server's peak RSS grew by %d MiB during 8 concurrent queries", grew>>20)
	if grew > 200<<20 {
		t.Errorf("8 concurrent queries of one build's logs raised the server's peak memory by %d MiB; want under 200", grew>>20)
	}
}

// peakRSS reads a process's peak resident size (VmHWM) in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// TestListFiltersAtTheEdgesOfTime: startedAfter/startedBefore beyond what
// a Unix nanosecond count holds wrapped around in the store and selected
// the opposite (a sandbox "started after 9999" was listed).
func TestListFiltersAtTheEdgesOfTime(t *testing.T) {
	s := startServer(t)
	c := bldTenant{s, s.APIKey}
	r := c.call(t, "POST", "/sandboxes", map[string]any{"templateID": "base"})
	if r.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	for _, q := range []struct {
		query string
		want  int
	}{
		{"startedAfter=9999-12-31T23:59:59Z", 0},
		{"startedBefore=0001-01-01T00:00:00Z", 0},
		{"startedBefore=9999-12-31T23:59:59Z", 1},
		{"startedAfter=0001-01-01T00:00:00Z", 1},
	} {
		r := c.call(t, "GET", "/v2/sandboxes?"+q.query, nil)
		var got []map[string]any
		decodeJSON(t, r, &got)
		if r.Status != http.StatusOK || len(got) != q.want {
			t.Errorf("GET /v2/sandboxes?%s = %d with %d sandboxes, want %d", q.query, r.Status, len(got), q.want)
		}
	}
}

// TestBuiltinSpawnsAreNotShared: a built-in template's spawnCount and
// lastSpawnedAt counted every team's sandboxes, so one team could watch
// when another created sandboxes.
func TestBuiltinSpawnsAreNotShared(t *testing.T) {
	s := startServer(t)
	bob := bldTenant{s, s.CreateTeam(t, "spawnwatch-"+randHex(t, 3))}
	alice := bldTenant{s, s.APIKey}
	if r := alice.call(t, "POST", "/sandboxes", map[string]any{"templateID": "base"}); r.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var list []struct {
		TemplateID    string  `json:"templateID"`
		SpawnCount    int     `json:"spawnCount"`
		LastSpawnedAt *string `json:"lastSpawnedAt"`
	}
	decodeJSON(t, bob.call(t, "GET", "/templates", nil), &list)
	var one struct {
		SpawnCount    int     `json:"spawnCount"`
		LastSpawnedAt *string `json:"lastSpawnedAt"`
	}
	decodeJSON(t, bob.call(t, "GET", "/templates/base", nil), &one)
	for _, tpl := range list {
		if tpl.TemplateID == "base" && (tpl.SpawnCount != 0 || tpl.LastSpawnedAt != nil) {
			t.Errorf("GET /templates shows team B another team's use of base: spawnCount %d, lastSpawnedAt set: %v", tpl.SpawnCount, tpl.LastSpawnedAt != nil)
		}
	}
	if one.SpawnCount != 0 || one.LastSpawnedAt != nil {
		t.Errorf("GET /templates/base shows team B another team's use: spawnCount %d, lastSpawnedAt set: %v", one.SpawnCount, one.LastSpawnedAt != nil)
	}
}

// TestTeamKeysAreBounded: POST /access-tokens (and /api-keys) in a loop
// added database rows without end, each listed whole by GET /api-keys.
func TestTeamKeysAreBounded(t *testing.T) {
	s := startServer(t)
	c := bldTenant{s, s.CreateTeam(t, "keyflood-"+randHex(t, 3))}
	const bound = 500 // internal/api maxTeamKeys
	created := 1      // the team's first key
	for ; created <= bound; created++ {
		path := "/access-tokens"
		if created%2 == 0 {
			path = "/api-keys"
		}
		r := c.call(t, "POST", path, map[string]any{"name": "k"})
		if r.Status == http.StatusTooManyRequests {
			break
		}
		if r.Status != http.StatusCreated {
			t.Fatalf("POST %s #%d = %d %s", path, created, r.Status, r.Body)
		}
	}
	if created != bound {
		t.Errorf("a team made %d keys; want the bound %d, then 429", created, bound)
	}
}

// TestSDKDefaultTemplateNamesAreReserved: E2B's SDK creates MCP sandboxes
// from the template named mcp-gateway and runs `mcp-gateway --config
// <the MCP servers' keys>` in it. A team that named and published its own
// template mcp-gateway received every other team's MCP sandboxes.
func TestSDKDefaultTemplateNamesAreReserved(t *testing.T) {
	s := startServer(t)
	alice := bldTenant{s, s.APIKey}
	bob := bldTenant{s, s.CreateTeam(t, "squat-b-"+randHex(t, 3))}
	for _, name := range []string{"mcp-gateway", "desktop"} {
		r := bob.call(t, "POST", "/v3/templates", map[string]any{"name": name})
		if r.Status == http.StatusConflict {
			continue
		}
		if r.Status != http.StatusAccepted {
			t.Fatalf("POST /v3/templates name %s = %d %s, want 409", name, r.Status, r.Body)
		}
		var out struct{ TemplateID, BuildID string }
		decodeJSON(t, r, &out)
		if st, said := bob.build(t, out.TemplateID, out.BuildID, map[string]any{"steps": []any{bldRun("echo squat > /tmp/squat")}}); st != "ready" {
			t.Fatalf("team B took the name %s; its build: %s %s", name, st, bldAround(said, "error"))
		}
		bob.call(t, "PATCH", "/templates/"+out.TemplateID, map[string]any{"public": true})
		got := alice.call(t, "POST", "/sandboxes", map[string]any{"templateID": name})
		t.Fatalf("team B took and published the SDK default template name %s: team A creating from it = %d %s", name, got.Status, got.Body)
	}
}
