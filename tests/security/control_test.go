package security

// Attacks on the control plane by a tenant holding an API key (issue 12,
// items 9 and 13–17): keys that outlive their revocation, cross-team reads
// through /metrics, template aliases and API keys, a team raising its own
// budget, inputs that overflow or poison a sandbox, unbounded concurrency,
// slow request bodies, and secrets left world-readable in the data dir.

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the test deletes a key row as an operator would

	"github.com/sbxdev/sbx/sdk"
	"github.com/sbxdev/sbx/tests/harness"
)

// revokeWithin is how soon a revoked key must stop working (item 9).
const revokeWithin = time.Second

func keyHeader(key string) map[string]string { return map[string]string{"X-API-Key": key} }

// adminKey reads the admin key the server wrote at first start.
func adminKey(t *testing.T, s *harness.Server) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.DataDir, "admin-key"))
	if err != nil {
		t.Fatalf("read the admin key: %v", err)
	}
	return strings.TrimSpace(string(b))
}

type apiKeyJSON struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Key  string `json:"key"`
	Mask struct {
		Prefix            string `json:"prefix"`
		ValueLength       int    `json:"valueLength"`
		MaskedValuePrefix string `json:"maskedValuePrefix"`
		MaskedValueSuffix string `json:"maskedValueSuffix"`
	} `json:"mask"`
}

func decodeJSON(t *testing.T, r harness.RawResponse, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.Body), v); err != nil {
		t.Fatalf("answer %d %q is not the expected JSON: %v", r.Status, r.Body, err)
	}
}

func listKeys(t *testing.T, s *harness.Server, key string) []apiKeyJSON {
	t.Helper()
	r := s.Raw(t, "GET", "/api-keys", "", keyHeader(key))
	if r.Status != http.StatusOK {
		t.Fatalf("GET /api-keys = %d %s, want 200", r.Status, r.Body)
	}
	var keys []apiKeyJSON
	decodeJSON(t, r, &keys)
	return keys
}

// waitUnauthorized polls with key until it answers 401, and fails t if
// that takes longer than revokeWithin.
func waitUnauthorized(t *testing.T, s *harness.Server, key string) harness.RawResponse {
	t.Helper()
	start := time.Now()
	for {
		r := s.Raw(t, "GET", "/v2/sandboxes", "", keyHeader(key))
		took := time.Since(start)
		if r.Status == http.StatusUnauthorized {
			if took > revokeWithin {
				t.Errorf("a revoked key kept working for %v (want under %v)", took.Round(time.Millisecond), revokeWithin)
			}
			return r
		}
		if took > revokeWithin+2*time.Second {
			t.Fatalf("a revoked key still answers %d after %v (want 401 within %v)", r.Status, took.Round(time.Millisecond), revokeWithin)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestControlKeys: keys are listed, rotated and revoked per team, a revoked
// key (through the API or deleted from the database) stops working within
// a second, and no team reaches another team's keys.
func TestControlKeys(t *testing.T) {
	s := startServer(t)
	keyB := s.CreateTeam(t, "ctl-keys-b-"+randHex(t, 3))

	t.Run("revoke through the API", func(t *testing.T) {
		r := s.Raw(t, "POST", "/api-keys", `{"name": "ci"}`, keyHeader(keyB))
		if r.Status != http.StatusCreated {
			t.Fatalf("POST /api-keys = %d %s, want 201", r.Status, r.Body)
		}
		var created apiKeyJSON
		decodeJSON(t, r, &created)
		if !strings.HasPrefix(created.Key, "e2b_") || created.ID == "" {
			t.Fatalf("created key %+v: want an id and an e2b_ key", created)
		}
		// Listing shows masks, never the key.
		keys := listKeys(t, s, keyB)
		found := false
		for _, k := range keys {
			if k.Key != "" || strings.Contains(fmt.Sprint(k), created.Key[4:]) {
				t.Errorf("GET /api-keys returned a key in clear: %+v", k)
			}
			found = found || k.ID == created.ID
		}
		if !found {
			t.Fatalf("GET /api-keys does not list the new key %s: %+v", created.ID, keys)
		}
		if r := s.Raw(t, "GET", "/v2/sandboxes", "", keyHeader(created.Key)); r.Status != http.StatusOK {
			t.Fatalf("the new key answers %d %s", r.Status, r.Body)
		}
		if r := s.Raw(t, "DELETE", "/api-keys/"+created.ID, "", keyHeader(keyB)); r.Status != http.StatusNoContent {
			t.Fatalf("DELETE /api-keys/%s = %d %s, want 204", created.ID, r.Status, r.Body)
		}
		r = waitUnauthorized(t, s, created.Key)
		if !strings.Contains(strings.ToLower(r.Body), "revoked") && !strings.Contains(strings.ToLower(r.Body), "invalid api key") {
			t.Errorf("401 for a revoked key says %q; want it to say the key is invalid or revoked", r.Body)
		}
	})

	t.Run("row deleted from the database", func(t *testing.T) {
		keyD := s.CreateTeam(t, "ctl-keys-d-"+randHex(t, 3))
		if r := s.Raw(t, "GET", "/v2/sandboxes", "", keyHeader(keyD)); r.Status != http.StatusOK {
			t.Fatalf("the new team's key answers %d %s", r.Status, r.Body)
		}
		deleteKeyRow(t, s, keyD)
		waitUnauthorized(t, s, keyD)
	})

	t.Run("another team's keys", func(t *testing.T) {
		keysA := listKeys(t, s, s.APIKey)
		if len(keysA) == 0 {
			t.Fatal("team A lists no keys")
		}
		for _, k := range listKeys(t, s, keyB) {
			for _, a := range keysA {
				if k.ID == a.ID {
					t.Errorf("team B lists team A's key %s", a.ID)
				}
			}
		}
		for _, a := range keysA {
			for _, req := range []struct{ method, body string }{{"DELETE", ""}, {"PATCH", `{"name": "pwned"}`}} {
				r := s.Raw(t, req.method, "/api-keys/"+a.ID, req.body, keyHeader(keyB))
				if r.Status != http.StatusNotFound {
					t.Errorf("team B %s /api-keys/%s (team A's) = %d %s, want 404", req.method, a.ID, r.Status, r.Body)
				}
			}
		}
		if r := s.Raw(t, "GET", "/v2/sandboxes", "", keyHeader(s.APIKey)); r.Status != http.StatusOK {
			t.Fatalf("team A's key stopped working after team B's attempts: %d %s", r.Status, r.Body)
		}
		// A team key is not an admin key, and X-Team-ID does not make it one.
		teamA := teamIDOf(t, s, s.APIKey)
		r := s.Raw(t, "POST", "/teams", `{"name": "ctl-evil"}`, keyHeader(keyB))
		if r.Status != http.StatusForbidden {
			t.Errorf("team key POST /teams = %d %s, want 403", r.Status, r.Body)
		}
		r = s.Raw(t, "POST", "/api-keys", `{"name": "ctl-evil"}`, map[string]string{"X-API-Key": keyB, "X-Team-ID": teamA})
		if r.Status != http.StatusForbidden {
			t.Errorf("team B POST /api-keys with X-Team-ID of team A = %d %s, want 403", r.Status, r.Body)
		}
		if n := len(listKeys(t, s, s.APIKey)); n != len(keysA) {
			t.Errorf("team A has %d keys after team B's attempts, had %d", n, len(keysA))
		}
	})

	t.Run("last key", func(t *testing.T) {
		keyC := s.CreateTeam(t, "ctl-keys-c-"+randHex(t, 3))
		keys := listKeys(t, s, keyC)
		if len(keys) != 1 {
			t.Fatalf("a new team has %d keys, want 1", len(keys))
		}
		r := s.Raw(t, "DELETE", "/api-keys/"+keys[0].ID, "", keyHeader(keyC))
		if r.Status != http.StatusConflict {
			t.Errorf("deleting a team's last key without force = %d %s, want 409", r.Status, r.Body)
		}
		if r := s.Raw(t, "GET", "/v2/sandboxes", "", keyHeader(keyC)); r.Status != http.StatusOK {
			t.Errorf("the last key stopped working: %d %s", r.Status, r.Body)
		}
	})
}

// teamIDOf returns the team ID of key (from its budget, which every team
// may read).
func teamIDOf(t *testing.T, s *harness.Server, key string) string {
	t.Helper()
	r := s.Raw(t, "GET", "/teams/me/budget", "", keyHeader(key))
	var b struct {
		TeamID string `json:"teamId"`
	}
	decodeJSON(t, r, &b)
	if b.TeamID == "" {
		t.Fatalf("GET /teams/me/budget = %d %s: no teamId", r.Status, r.Body)
	}
	return b.TeamID
}

// deleteKeyRow removes an API key from sbx.db behind the server's back, as
// an operator with sqlite3 would.
func deleteKeyRow(t *testing.T, s *harness.Server, key string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(s.DataDir, "sbx.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sum := sha256.Sum256([]byte(key))
	res, err := db.ExecContext(t.Context(), `DELETE FROM api_keys WHERE hash = ?`, hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("deleted %d rows for the key, want 1", n)
	}
}

// buildTemplate builds a tiny private template for the team of key.
func buildTemplate(t *testing.T, s *harness.Server, key, name string) string {
	t.Helper()
	dir := t.TempDir()
	df := "FROM e2bdev/base:latest\nRUN echo " + name + " > /etc/ctl-marker\n"
	if err := os.WriteFile(filepath.Join(dir, "e2b.Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), s.Bin, "template", "build", "--name", name)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "E2B_API_URL="+s.URL, "E2B_API_KEY="+key, "E2B_SANDBOX_URL="+s.URL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sbx template build: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Template ID: ([a-z0-9]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("sbx template build printed no template ID:\n%s", out)
	}
	return string(m[1])
}

// TestControlScoping: /metrics, template aliases and budgets answer a team
// key with that team's own data only.
func TestControlScoping(t *testing.T) {
	s := startServer(t)
	keyB := s.CreateTeam(t, "ctl-scope-b-"+randHex(t, 3))
	name := "ctl-secret-" + randHex(t, 4)
	tplID := buildTemplate(t, s, s.APIKey, name)
	create(t, s.Client(t), sdk.CreateOptions{Template: tplID})

	t.Run("metrics", func(t *testing.T) {
		r := s.Raw(t, "GET", "/metrics", "", keyHeader(keyB))
		if r.Status != http.StatusOK {
			t.Fatalf("GET /metrics with a team key = %d %s", r.Status, r.Body)
		}
		if strings.Contains(r.Body, tplID) || strings.Contains(r.Body, name) {
			t.Errorf("team B's /metrics names team A's private template %s (%s)", tplID, name)
		}
		for _, line := range strings.Split(r.Body, "\n") {
			if strings.HasPrefix(line, "sbx_sandboxes_running{") || strings.HasPrefix(line, "sbx_sandbox_create_duration_seconds_count{") {
				t.Errorf("team B (no sandboxes) sees another team's series: %s", line)
			}
		}
		r = s.Raw(t, "GET", "/metrics", "", keyHeader(adminKey(t, s)))
		if r.Status != http.StatusOK || !strings.Contains(r.Body, tplID) || !strings.Contains(r.Body, `template="`+name+`"`) {
			t.Errorf("the admin's /metrics = %d and lacks template %s (%s)", r.Status, tplID, name)
		}
		if r := s.Raw(t, "GET", "/metrics", "", nil); r.Status != http.StatusUnauthorized {
			t.Errorf("GET /metrics without a key = %d, want 401", r.Status)
		}
	})

	t.Run("template alias", func(t *testing.T) {
		missing := "ctl-missing-" + randHex(t, 4)
		other := s.Raw(t, "GET", "/templates/aliases/"+name, "", keyHeader(keyB))
		none := s.Raw(t, "GET", "/templates/aliases/"+missing, "", keyHeader(keyB))
		if other.Status != http.StatusNotFound {
			t.Errorf("team B looking up team A's alias = %d %s, want 404", other.Status, other.Body)
		}
		if strings.ReplaceAll(other.Body, name, "X") != strings.ReplaceAll(none.Body, missing, "X") {
			t.Errorf("another team's alias answers %q, a missing one %q: they must not differ", other.Body, none.Body)
		}
		if r := s.Raw(t, "GET", "/templates/aliases/"+name, "", keyHeader(s.APIKey)); r.Status != http.StatusOK {
			t.Errorf("the owner looking up its alias = %d %s", r.Status, r.Body)
		}
	})

	t.Run("budget", func(t *testing.T) {
		r := s.Raw(t, "PUT", "/teams/me/budget", `{"maxConcurrent": 1000, "maxDailySpendUsd": 1e9}`, keyHeader(keyB))
		if r.Status != http.StatusForbidden {
			t.Errorf("a team raising its own budget = %d %s, want 403", r.Status, r.Body)
		}
		r = s.Raw(t, "GET", "/teams/me/budget", "", keyHeader(keyB))
		if r.Status != http.StatusOK {
			t.Fatalf("a team reading its own budget = %d %s, want 200", r.Status, r.Body)
		}
		var b struct {
			TeamID        string `json:"teamId"`
			MaxConcurrent int    `json:"maxConcurrent"`
		}
		decodeJSON(t, r, &b)
		if b.MaxConcurrent == 1000 {
			t.Errorf("the team's PUT changed its budget: %s", r.Body)
		}
		// The admin sets it.
		r = s.Raw(t, "PUT", "/teams/"+b.TeamID+"/budget", `{"maxConcurrent": 7}`, keyHeader(adminKey(t, s)))
		if r.Status != http.StatusOK || !strings.Contains(r.Body, `"maxConcurrent":7`) {
			t.Errorf("the admin setting a team's budget = %d %s", r.Status, r.Body)
		}
	})
}

// TestControlValidation: bounds on request fields are checked before any
// work, with a 400 naming the field.
func TestControlValidation(t *testing.T) {
	s := startServer(t)
	c := s.Client(t)
	sb := create(t, c, sdk.CreateOptions{})
	before, err := c.List(opCtx(t), sdk.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key := keyHeader(s.APIKey)
	huge := `{"templateID": "base", "metadata": {` + strings.TrimSuffix(strings.Repeat(`"k": "v", `, 1), ", ")
	for i := range 5000 {
		huge += fmt.Sprintf(`, "k%d": "v"`, i)
	}
	huge += "}}"
	tests := []struct {
		name, method, path, body, mention string
	}{
		{"timeout overflow", "POST", "/v2/sandboxes", `{"templateID": "base", "timeout": 18446744074}`, "timeout"},
		{"timeout overflow v1", "POST", "/sandboxes", `{"templateID": "base", "timeout": 9223372037}`, "timeout"},
		{"timeout as float", "POST", "/v2/sandboxes", `{"templateID": "base", "timeout": 1e30}`, "timeout"},
		{"env value with NUL", "POST", "/v2/sandboxes", `{"templateID": "base", "envVars": {"A": "x\u0000y"}}`, "envVars"},
		{"env name with NUL", "POST", "/v2/sandboxes", `{"templateID": "base", "envVars": {"A\u0000B": "x"}}`, "envVars"},
		{"huge env value", "POST", "/v2/sandboxes", `{"templateID": "base", "envVars": {"A": "` + strings.Repeat("x", 300<<10) + `"}}`, "envVars"},
		{"metadata count", "POST", "/v2/sandboxes", huge, "metadata"},
		{"unknown field", "POST", "/v2/sandboxes", `{"templateID": "base", "tmeout": 5}`, "tmeout"},
		{"template ref", "POST", "/v2/sandboxes", `{"templateID": "../../etc"}`, "templateID"},
		{"set timeout overflow", "POST", "/sandboxes/" + sb.ID + "/timeout", `{"timeout": 18446744074}`, "timeout"},
		{"connect timeout overflow", "POST", "/v2/sandboxes/" + sb.ID + "/connect", `{"timeout": 18446744074}`, "timeout"},
		{"resume timeout overflow", "POST", "/sandboxes/" + sb.ID + "/resume", `{"timeout": 18446744074}`, "timeout"},
		{"webhook unknown field", "POST", "/events/webhooks", `{"name": "x", "url": "http://127.0.0.1:1/", "events": ["sandbox.lifecycle.created"], "signatureSecret": "s", "bogus": 1}`, "bogus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := s.Raw(t, tt.method, tt.path, tt.body, key)
			if r.Status != http.StatusBadRequest {
				t.Fatalf("%s %s = %d %.300s, want 400", tt.method, tt.path, r.Status, r.Body)
			}
			var body struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			decodeJSON(t, r, &body)
			if body.Code != 400 || !strings.Contains(body.Message, tt.mention) {
				t.Errorf("message %q does not name %q", body.Message, tt.mention)
			}
		})
	}
	after, err := c.List(opCtx(t), sdk.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("rejected requests changed the sandbox count from %d to %d", len(before), len(after))
	}
	if res := mustSh(t, sb, "", "echo ok"); res != "ok\n" {
		t.Errorf("the sandbox after the rejected requests: %q", res)
	}
}

// TestControlTeamCap: a team cannot run more sandboxes than the server's
// per-team cap, even with concurrent creates; the admin raises it per team.
func TestControlTeamCap(t *testing.T) {
	const capN = 2
	s := startServer(t, "--team-max-sandboxes", fmt.Sprint(capN))
	c := s.Client(t)
	var mu sync.Mutex
	var ok []*sdk.Sandbox
	var refused []error
	var wg sync.WaitGroup
	for range capN + 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sb, err := c.Create(opCtx(t), sdk.CreateOptions{})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				refused = append(refused, err)
				return
			}
			ok = append(ok, sb)
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, sb := range ok {
			_ = sb.Kill(opCtx(t))
		}
	})
	if len(ok) != capN {
		t.Fatalf("%d concurrent creates under a cap of %d: %d succeeded (errors %v)", capN+2, capN, len(ok), refused)
	}
	for _, err := range refused {
		if !sdk.IsRateLimited(err) || !strings.Contains(err.Error(), fmt.Sprint(capN)) || !strings.Contains(err.Error(), "team-max-sandboxes") {
			t.Errorf("refusal %v: want a 429 naming the limit (%d) and how to raise it", err, capN)
		}
	}
	// Killing one frees a slot.
	if err := ok[0].Kill(opCtx(t)); err != nil {
		t.Fatal(err)
	}
	ok = ok[1:]
	ok = append(ok, create(t, c, sdk.CreateOptions{}))
	// The admin raises this team's cap.
	r := s.Raw(t, "GET", "/teams", "", keyHeader(adminKey(t, s)))
	var teams []struct {
		TeamID string `json:"teamID"`
		Name   string `json:"name"`
	}
	decodeJSON(t, r, &teams)
	if len(teams) == 0 {
		t.Fatalf("GET /teams as admin: %d %s", r.Status, r.Body)
	}
	r = s.Raw(t, "PATCH", "/teams/"+teams[0].TeamID, fmt.Sprintf(`{"maxSandboxes": %d}`, capN+1), keyHeader(adminKey(t, s)))
	if r.Status != http.StatusOK {
		t.Fatalf("PATCH /teams/%s = %d %s", teams[0].TeamID, r.Status, r.Body)
	}
	create(t, c, sdk.CreateOptions{})
	// And a team cannot raise it itself.
	r = s.Raw(t, "PATCH", "/teams/"+teams[0].TeamID, `{"maxSandboxes": 100}`, keyHeader(s.APIKey))
	if r.Status != http.StatusForbidden {
		t.Errorf("a team raising its own cap = %d %s, want 403", r.Status, r.Body)
	}
}

// TestControlSlowBody: a client that sends headers and then a body byte
// every few seconds is cut off, while the server keeps answering others.
func TestControlSlowBody(t *testing.T) {
	s := startServer(t)
	conn, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v2/sandboxes HTTP/1.1\r\nHost: %s\r\nX-API-Key: %s\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n{", s.Addr, s.APIKey)
	closed := make(chan time.Time, 1)
	var answer bytes.Buffer
	go func() {
		_, _ = io.Copy(&answer, conn)
		closed <- time.Now()
	}()
	start := time.Now()
	const limit = 30 * time.Second
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case at := <-closed:
			t.Logf("slow body cut after %v: %.200q", at.Sub(start).Round(time.Millisecond), answer.String())
			return
		case <-tick.C:
			if time.Since(start) > limit {
				t.Fatalf("a body trickling one byte every 2 s is still being read after %v", limit)
			}
			_, _ = conn.Write([]byte(" "))
			// Others are served meanwhile.
			if r := s.Raw(t, "GET", "/v2/sandboxes", "", keyHeader(s.APIKey)); r.Status != http.StatusOK {
				t.Errorf("another client got %d while the slow body trickled", r.Status)
			}
		}
	}
}

// TestControlDataDirModes: a data dir that already exists with loose modes
// (an older sbx, a restore from backup) is tightened at start.
func TestControlDataDirModes(t *testing.T) {
	s := startServer(t)
	s.Stop(syscall.SIGTERM)
	loosen := map[string]os.FileMode{"": 0o755, "sbx.db": 0o644, "api-key": 0o644, "specs": 0o755}
	for name, mode := range loosen {
		p := filepath.Join(s.DataDir, name)
		if name == "specs" {
			_ = os.MkdirAll(p, 0o755)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	s.Start(t)
	want := map[string]os.FileMode{"": 0o711, "sbx.db": 0o600, "api-key": 0o600, "admin-key": 0o600, "specs": 0o700}
	for _, extra := range []string{"sbx.db-wal", "sbx.db-shm"} {
		if _, err := os.Stat(filepath.Join(s.DataDir, extra)); err == nil {
			want[extra] = 0o600
		}
	}
	for name, mode := range want {
		fi, err := os.Stat(filepath.Join(s.DataDir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got := fi.Mode().Perm(); got&^mode != 0 {
			t.Errorf("%s/%s has mode %o after a restart, want at most %o", s.DataDir, name, got, mode)
		}
	}
	fi, err := os.Stat(filepath.Join(s.DataDir, "agent", "envd"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("agent/envd: %v %v, want 0755 (sandboxes execute it)", fi.Mode(), err)
	}
}

// TestControlTeamDeleteRemovesData: deleting a team removes its secrets
// (sealed values must not outlive their owner), its volumes (rows and disk
// images), its webhooks and its snapshots, and leaves other teams' alone.
func TestControlTeamDeleteRemovesData(t *testing.T) {
	s := startServer(t, "--webhook-allow-private")
	admin := keyHeader(adminKey(t, s))
	keys := map[string]string{}
	for _, name := range []string{"gone", "stays"} {
		key := s.CreateTeam(t, "ctl-del-"+name+"-"+randHex(t, 3))
		keys[name] = key
		for _, req := range []struct{ path, body string }{
			{"/secrets", `{"name": "db-password", "value": "hunter2-` + name + `"}`},
			{"/volumes", `{"name": "scratch"}`},
			{"/events/webhooks", `{"name": "w", "url": "http://127.0.0.1:1/hook", "events": ["sandbox.lifecycle.created"], "signatureSecret": "ctl-del-secret"}`},
		} {
			if r := s.Raw(t, "POST", req.path, req.body, keyHeader(key)); r.Status != http.StatusCreated {
				t.Fatalf("team %s POST %s = %d %s", name, req.path, r.Status, r.Body)
			}
		}
	}
	gone, stays := teamIDOf(t, s, keys["gone"]), teamIDOf(t, s, keys["stays"])
	snapDirs := map[string]string{}
	for name, key := range keys {
		c := s.ClientWithKey(t, key)
		sb := create(t, c, sdk.CreateOptions{})
		snap, err := c.CreateSnapshot(opCtx(t), sb.ID, "")
		if err != nil {
			t.Fatalf("team %s snapshot: %v", name, err)
		}
		snapDirs[name] = filepath.Join(s.DataDir, "sandbox-snapshots", strings.TrimSuffix(snap.ID, ":default"))
		if _, err := os.Stat(snapDirs[name]); err != nil {
			t.Fatalf("team %s's snapshot is not where this test looks: %v", name, err)
		}
	}
	images := func(team string) []string {
		var out []string
		for _, id := range dbStrings(t, s, `SELECT id FROM volumes WHERE team_id = ?`, team) {
			if _, err := os.Stat(filepath.Join(s.DataDir, "volumes", id+".img")); err == nil {
				out = append(out, id)
			}
		}
		return out
	}
	if n := len(images(gone)); n != 1 {
		t.Fatalf("before the delete: team has %d volume images on disk, want 1", n)
	}
	goneVolumes := dbStrings(t, s, `SELECT id FROM volumes WHERE team_id = ?`, gone)

	if r := s.Raw(t, "DELETE", "/teams/"+gone, "", admin); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE /teams/%s = %d %s, want 204", gone, r.Status, r.Body)
	}
	for _, table := range []string{"secrets", "volumes", "webhooks"} {
		q := `SELECT id FROM ` + table + ` WHERE team_id = ?`
		if left := dbStrings(t, s, q, gone); len(left) != 0 {
			t.Errorf("after deleting the team, %s still holds its rows %v", table, left)
		}
		if kept := dbStrings(t, s, q, stays); len(kept) != 1 {
			t.Errorf("deleting another team left %d of this team's %s, want 1", len(kept), table)
		}
	}
	for _, id := range goneVolumes {
		if _, err := os.Stat(filepath.Join(s.DataDir, "volumes", id+".img")); !os.IsNotExist(err) {
			t.Errorf("volume image %s of the deleted team is still on disk (stat: %v)", id, err)
		}
	}
	if n := len(images(stays)); n != 1 {
		t.Errorf("the other team has %d volume images on disk after the delete, want 1", n)
	}
	if _, err := os.Stat(snapDirs["gone"]); !os.IsNotExist(err) {
		t.Errorf("the deleted team's snapshot %s is still on disk (stat: %v)", snapDirs["gone"], err)
	}
	if _, err := os.Stat(snapDirs["stays"]); err != nil {
		t.Errorf("the other team's snapshot is gone after the delete: %v", err)
	}
}

// dbStrings runs a one-column query on the server's SQLite database.
func dbStrings(t *testing.T, s *harness.Server, q string, args ...any) []string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(s.DataDir, "sbx.db")+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(t.Context(), q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
