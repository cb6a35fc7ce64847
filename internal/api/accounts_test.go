package api

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/proxy"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
)

// fakeSandboxes records kills; the account routes need nothing else.
type fakeSandboxes struct {
	Sandboxes
	mu     sync.Mutex
	live   []store.Sandbox
	killed []string
}

func (f *fakeSandboxes) List(_ context.Context, flt store.ListFilter) ([]store.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []store.Sandbox
	for _, s := range f.live {
		if s.TeamID == flt.TeamID {
			out = append(out, s)
		}
	}
	return out, nil
}

func (f *fakeSandboxes) Kill(_ context.Context, teamID, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.killed = append(f.killed, teamID+"/"+id)
	return nil
}

type accountsEnv struct {
	t      *testing.T
	srv    *httptest.Server
	api    *Server
	st     *sqlstore.Store
	sbx    *fakeSandboxes
	admin  string
	keyA   string
	teamA  string
	keyB   string
	teamB  string
	clock  time.Time
	clockM sync.Mutex
}

func newAccountsEnv(t *testing.T) *accountsEnv {
	t.Helper()
	st, err := sqlstore.Open(t.Context(), filepath.Join(t.TempDir(), "sbx.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &accountsEnv{t: t, st: st, sbx: &fakeSandboxes{}, admin: auth.NewAdminKey(), keyA: auth.NewAPIKey(), keyB: auth.NewAPIKey(),
		clock: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := st.SetAdminKey(t.Context(), e.admin); err != nil {
		t.Fatal(err)
	}
	a, err := st.CreateTeam(t.Context(), "alpha", e.keyA)
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.CreateTeam(t.Context(), "beta", e.keyB)
	if err != nil {
		t.Fatal(err)
	}
	e.teamA, e.teamB = a.ID, b.ID
	e.sbx.live = []store.Sandbox{{ID: "sa", TeamID: a.ID}, {ID: "sb", TeamID: b.ID}}
	log := slog.New(slog.DiscardHandler)
	e.api = New(log, e.sbx, nil, st, proxy.New(nil, "", log))
	e.api.keys.now = func() time.Time { e.clockM.Lock(); defer e.clockM.Unlock(); return e.clock }
	e.srv = httptest.NewServer(e.api)
	t.Cleanup(e.srv.Close)
	return e
}

func (e *accountsEnv) advance(d time.Duration) {
	e.clockM.Lock()
	e.clock = e.clock.Add(d)
	e.clockM.Unlock()
}

// do sends a request with key (and X-Team-ID team, if set) and decodes a
// 2xx JSON answer into out.
func (e *accountsEnv) do(key, team, method, path, body string, out any) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	if team != "" {
		req.Header.Set("X-Team-ID", team)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(b, out); err != nil {
			e.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode, string(b)
}

func TestAPIKeyLifecycle(t *testing.T) {
	e := newAccountsEnv(t)
	var created createdKeyJSON
	if st, body := e.do(e.keyA, "", "POST", "/api-keys", `{"name": "ci"}`, &created); st != 201 {
		t.Fatalf("create: %d %s", st, body)
	}
	if !strings.HasPrefix(created.Key, "e2b_") || created.Mask.Prefix != "e2b_" || created.Mask.ValueLength != 40 ||
		created.Mask.MaskedValueSuffix != created.Key[len(created.Key)-4:] || created.TeamID != e.teamA {
		t.Fatalf("created key %+v", created)
	}
	var keys []apiKeyJSON
	e.do(e.keyA, "", "GET", "/api-keys", "", &keys)
	if len(keys) != 2 || keys[0].Current != true || keys[1].ID != created.ID {
		t.Fatalf("list: %+v", keys)
	}
	if st, _ := e.do(created.Key, "", "GET", "/api-keys", "", nil); st != 200 {
		t.Fatalf("the new key: %d", st)
	}
	var renamed apiKeyJSON
	if st, body := e.do(e.keyA, "", "PATCH", "/api-keys/"+created.ID, `{"name": "deploy"}`, &renamed); st != 200 || renamed.Name != "deploy" {
		t.Fatalf("rename: %d %s", st, body)
	}
	// Revoked through the API: refused on its next request, cache or not.
	if st, body := e.do(e.keyA, "", "DELETE", "/api-keys/"+created.ID, "", nil); st != 204 {
		t.Fatalf("revoke: %d %s", st, body)
	}
	if st, body := e.do(created.Key, "", "GET", "/api-keys", "", nil); st != 401 || !strings.Contains(body, "revoked") {
		t.Fatalf("a revoked key: %d %s", st, body)
	}
	// Last key: only with force.
	if st, body := e.do(e.keyA, "", "DELETE", "/api-keys/"+keys[0].ID, "", nil); st != 409 || !strings.Contains(body, "last key") {
		t.Fatalf("deleting the last key: %d %s", st, body)
	}
	if st, body := e.do(e.keyA, "", "DELETE", "/api-keys/"+keys[0].ID+"?force=maybe", "", nil); st != 400 {
		t.Fatalf("force=maybe: %d %s", st, body)
	}
}

func TestKeyRevokedBehindTheServersBack(t *testing.T) {
	e := newAccountsEnv(t)
	if st, _ := e.do(e.keyB, "", "GET", "/api-keys", "", nil); st != 200 {
		t.Fatal(st)
	}
	keys, _ := e.st.APIKeys(t.Context(), e.teamB)
	if err := e.st.DeleteAPIKey(t.Context(), keys[0].ID, true); err != nil {
		t.Fatal(err)
	}
	// Within the cache's TTL the answer may still be cached; past it, never.
	e.advance(keyTTL + time.Millisecond)
	if st, _ := e.do(e.keyB, "", "GET", "/api-keys", "", nil); st != 401 {
		t.Fatalf("a key deleted from the store works %v later: %d", keyTTL, st)
	}
}

func TestCrossTeamKeys(t *testing.T) {
	e := newAccountsEnv(t)
	keysA, _ := e.st.APIKeys(t.Context(), e.teamA)
	idA := keysA[0].ID
	tests := []struct {
		name, key, team, method, path, body string
		status                              int
	}{
		{"list shows only own", e.keyB, "", "GET", "/api-keys", "", 200},
		{"rename another team's", e.keyB, "", "PATCH", "/api-keys/" + idA, `{"name": "x"}`, 404},
		{"revoke another team's", e.keyB, "", "DELETE", "/api-keys/" + idA + "?force=true", "", 404},
		{"create in another team", e.keyB, e.teamA, "POST", "/api-keys", `{"name": "x"}`, 403},
		{"X-Team-ID of its own team", e.keyB, e.teamB, "GET", "/api-keys", "", 200},
		{"create a team", e.keyB, "", "POST", "/teams", `{"name": "evil"}`, 403},
		{"cap itself", e.keyB, "", "PATCH", "/teams/" + e.teamB, `{"maxSandboxes": 1000}`, 403},
		{"delete another team", e.keyB, "", "DELETE", "/teams/" + e.teamA, "", 403},
		{"read another team", e.keyB, "", "GET", "/teams/" + e.teamA, "", 404},
		{"read itself", e.keyB, "", "GET", "/teams/me", "", 200},
		{"no key", "", "", "GET", "/api-keys", "", 401},
		{"bad name", e.keyB, "", "POST", "/api-keys", `{"name": ""}`, 400},
		{"unknown field", e.keyB, "", "POST", "/api-keys", `{"name": "x", "teamID": "` + e.teamA + `"}`, 400},
	}
	for _, tt := range tests {
		if st, body := e.do(tt.key, tt.team, tt.method, tt.path, tt.body, nil); st != tt.status {
			t.Errorf("%s: %s %s = %d %s, want %d", tt.name, tt.method, tt.path, st, body, tt.status)
		}
	}
	var keys []apiKeyJSON
	e.do(e.keyB, "", "GET", "/api-keys", "", &keys)
	for _, k := range keys {
		if k.TeamID != e.teamB {
			t.Errorf("team B lists key %+v", k)
		}
	}
	if after, _ := e.st.APIKeys(t.Context(), e.teamA); len(after) != 1 {
		t.Errorf("team A's keys changed: %+v", after)
	}
}

func TestAdminKey(t *testing.T) {
	e := newAccountsEnv(t)
	// Cluster-wide routes without a team; team routes only with X-Team-ID.
	var teams []teamJSON
	if st, body := e.do(e.admin, "", "GET", "/teams", "", &teams); st != 200 || len(teams) != 2 {
		t.Fatalf("admin lists teams: %d %s", st, body)
	}
	var all []apiKeyJSON
	e.do(e.admin, "", "GET", "/api-keys", "", &all)
	if len(all) != 2 {
		t.Fatalf("admin lists every key: %+v", all)
	}
	if st, body := e.do(e.admin, "", "POST", "/api-keys", `{"name": "x"}`, nil); st != 403 || !strings.Contains(body, "X-Team-ID") {
		t.Errorf("admin creating a key without a team: %d %s", st, body)
	}
	if st, body := e.do(e.admin, "", "GET", "/v2/sandboxes", "", nil); st != 403 || !strings.Contains(body, "X-Team-ID") {
		t.Errorf("admin on a team route without X-Team-ID: %d %s", st, body)
	}
	var k createdKeyJSON
	if st, body := e.do(e.admin, e.teamB, "POST", "/api-keys", `{"name": "from admin"}`, &k); st != 201 || k.TeamID != e.teamB {
		t.Fatalf("admin creating a key for team B: %d %s", st, body)
	}
	if st, _ := e.do(e.admin, "no-such-team", "GET", "/api-keys", "", nil); st != 404 {
		t.Errorf("admin naming a missing team: %d", st)
	}
	// Teams.
	var nt createdTeamJSON
	if st, body := e.do(e.admin, "", "POST", "/teams", `{"name": "gamma", "maxSandboxes": 3}`, &nt); st != 201 ||
		nt.MaxSandboxes == nil || *nt.MaxSandboxes != 3 || !strings.HasPrefix(nt.APIKey, "e2b_") {
		t.Fatalf("create team: %d %s", st, body)
	}
	if st, _ := e.do(nt.APIKey, "", "GET", "/teams/me", "", nil); st != 200 {
		t.Errorf("the new team's key: %d", st)
	}
	if st, body := e.do(e.admin, "", "POST", "/teams", `{"name": "gamma"}`, nil); st != 409 {
		t.Errorf("a duplicate team name: %d %s", st, body)
	}
	var up teamJSON
	if st, body := e.do(e.admin, "", "PATCH", "/teams/"+nt.TeamID, `{"maxSandboxes": null}`, &up); st != 200 || up.MaxSandboxes != nil {
		t.Errorf("back to the default cap: %d %s", st, body)
	}
	for _, bad := range []string{`{"maxSandboxes": -1}`, `{"maxSandboxes": "ten"}`, `{"maxSandboxes": 1e9}`} {
		if st, body := e.do(e.admin, "", "PATCH", "/teams/"+nt.TeamID, bad, nil); st != 400 {
			t.Errorf("PATCH %s: %d %s", bad, st, body)
		}
	}
	if st, body := e.do(e.admin, "", "DELETE", "/teams/"+e.teamB, "", nil); st != 204 {
		t.Fatalf("delete team B: %d %s", st, body)
	}
	if st, _ := e.do(e.keyB, "", "GET", "/teams/me", "", nil); st != 401 {
		t.Errorf("a deleted team's key: %d, want 401", st)
	}
	if len(e.sbx.killed) != 1 || e.sbx.killed[0] != e.teamB+"/sb" {
		t.Errorf("killed on team deletion: %v, want team B's sandbox", e.sbx.killed)
	}
	// A bearer admin key, as Prometheus sends it.
	req, _ := http.NewRequest("GET", e.srv.URL+"/teams", nil)
	req.Header.Set("Authorization", "Bearer "+e.admin)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("bearer admin key: %v %v", resp.Status, err)
	}
}
