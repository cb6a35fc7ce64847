package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/sdk"
)

// errorBody checks an error answer is E2B's {"code": status, "message": ...}.
func errorBody(t *testing.T, r rawResponse) string {
	t.Helper()
	var body struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal([]byte(r.Body), &body); err != nil || body.Code != r.Status || body.Message == "" {
		t.Errorf("error body %q for status %d: want {\"code\": %d, \"message\": \"...\"}", r.Body, r.Status, r.Status)
	}
	return body.Message
}

func testTeams(t *testing.T, srv *Server) {
	a := srv.Client(t)
	keyB := srv.CreateTeam(t, "e2e-team-b-"+randHex(t, 3))
	if keyB == srv.APIKey {
		t.Fatal("the second team got the first team's key")
	}
	b := srv.ClientWithKey(t, keyB)
	tag := randHex(t, 6)
	sa := create(t, a, sdk.CreateOptions{Metadata: map[string]string{"team": tag}})
	ctx := opCtx(t)

	listB, err := b.List(ctx, sdk.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(listB, func(i sdk.SandboxInfo) bool { return i.SandboxID == sa.ID }) {
		t.Errorf("team B lists team A's sandbox %s", sa.ID)
	}
	if _, err := b.Get(ctx, sa.ID); !sdk.IsNotFound(err) {
		t.Errorf("team B Get(A's sandbox) = %v, want not found", err)
	}
	if _, err := b.Connect(ctx, sa.ID, sdk.ConnectOptions{Timeout: time.Minute}); !sdk.IsNotFound(err) {
		t.Errorf("team B Connect(A's sandbox) = %v, want not found", err)
	}
	if err := b.SetTimeout(ctx, sa.ID, time.Second); !sdk.IsNotFound(err) {
		t.Errorf("team B SetTimeout(A's sandbox) = %v, want not found", err)
	}
	if err := b.Kill(ctx, sa.ID); !sdk.IsNotFound(err) {
		t.Errorf("team B Kill(A's sandbox) = %v, want not found", err)
	}
	// Team A's sandbox is untouched.
	if res := run(t, sa, "echo alive", sdk.RunOptions{}); res.Stdout != "alive\n" {
		t.Errorf("A's sandbox after B's attempts: %+v", res)
	}
	// And B's own sandbox works and is invisible to A.
	sb := create(t, b, sdk.CreateOptions{})
	if _, err := a.Get(ctx, sb.ID); !sdk.IsNotFound(err) {
		t.Errorf("team A Get(B's sandbox) = %v, want not found", err)
	}
}

func testBadInput(t *testing.T, srv *Server) {
	key := map[string]string{"X-API-Key": srv.APIKey}
	c := srv.Client(t)
	before, err := c.List(opCtx(t), sdk.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		method  string
		path    string
		body    string
		headers map[string]string
		status  []int
		mention string // the message must mention this
	}{
		{"malformed JSON", "POST", "/v2/sandboxes", `{"templateID": "base"`, key, []int{400}, ""},
		{"JSON of the wrong type", "POST", "/v2/sandboxes", `{"templateID": 7}`, key, []int{400}, ""},
		{"unknown template", "POST", "/v2/sandboxes", `{"templateID": "no-such-template-e2e"}`, key, []int{400, 404}, "no-such-template-e2e"},
		{"negative timeout", "POST", "/v2/sandboxes", `{"templateID": "base", "timeout": -5}`, key, []int{400}, ""},
		{"malformed JSON v1", "POST", "/sandboxes", `{`, key, []int{400}, ""},
		{"wrong key", "GET", "/v2/sandboxes", "", map[string]string{"X-API-Key": "e2b_" + strings.Repeat("0", 40)}, []int{401}, ""},
		{"no key", "POST", "/v2/sandboxes", `{"templateID": "base"}`, nil, []int{401}, ""},
		{"garbage key", "GET", "/sandboxes", "", map[string]string{"X-API-Key": "hello"}, []int{401}, ""},
		{"unknown sandbox", "GET", "/sandboxes/doesnotexist0", "", key, []int{404}, ""},
		{"kill unknown sandbox", "DELETE", "/sandboxes/doesnotexist0", "", key, []int{404}, ""},
		{"malformed timeout body", "POST", "/sandboxes/doesnotexist0/timeout", `{"timeout": "soon"}`, key, []int{400, 404}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := srv.Raw(t, tt.method, tt.path, tt.body, tt.headers)
			if !slices.Contains(tt.status, r.Status) {
				t.Fatalf("%s %s %s = %d %s, want one of %v", tt.method, tt.path, tt.body, r.Status, r.Body, tt.status)
			}
			msg := errorBody(t, r)
			if tt.mention != "" && !strings.Contains(msg, tt.mention) {
				t.Errorf("message %q does not mention %q", msg, tt.mention)
			}
		})
	}
	after, err := c.List(opCtx(t), sdk.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("bad requests changed the sandbox count from %d to %d", len(before), len(after))
	}

	t.Run("data plane", func(t *testing.T) {
		r := srv.Raw(t, "GET", "/health", "", map[string]string{"E2b-Sandbox-Id": "doesnotexist0", "E2b-Sandbox-Port": "49983"})
		if r.Status != http.StatusBadGateway || !strings.Contains(r.Body, "The sandbox was not found") {
			t.Errorf("unknown sandbox through the proxy = %d %s, want 502 not found", r.Status, r.Body)
		}
		s := create(t, c, sdk.CreateOptions{})
		route := map[string]string{"E2b-Sandbox-Id": s.ID, "E2b-Sandbox-Port": "49983", "Content-Type": "application/json"}
		r = srv.Raw(t, "POST", "/process.Process/List", "{}", route)
		if r.Status != http.StatusUnauthorized {
			t.Errorf("envd RPC without access token = %d %s, want 401", r.Status, r.Body)
		}
		route["X-Access-Token"] = "wrong" + s.EnvdAccessToken
		r = srv.Raw(t, "GET", "/files?path=/etc/hostname", "", route)
		if r.Status != http.StatusUnauthorized {
			t.Errorf("/files with a wrong access token = %d %s, want 401", r.Status, r.Body)
		}
		route["X-Access-Token"] = s.EnvdAccessToken
		r = srv.Raw(t, "POST", "/filesystem.Filesystem/Stat", `{"path":`, route)
		if r.Status == http.StatusOK {
			t.Errorf("malformed RPC JSON = 200 %s", r.Body)
		}
	})
}

func testPathEscape(t *testing.T, srv *Server) {
	c := srv.Client(t)
	s := create(t, c, sdk.CreateOptions{})
	// Markers only the host has: a fresh file in the host's /tmp and the
	// server's API key file.
	secret := "sbx-e2e-secret-" + randHex(t, 12)
	marker := filepath.Join(os.TempDir(), "sbx-e2e-marker-"+randHex(t, 6))
	if err := os.WriteFile(marker, []byte(secret), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(marker) })
	keyFile := filepath.Join(srv.DataDir, "api-key")
	up := strings.Repeat("../", 12)
	reads := []string{
		marker,
		up + strings.TrimPrefix(marker, "/"),
		"/home/user/" + up + strings.TrimPrefix(marker, "/"),
		keyFile,
		up + strings.TrimPrefix(keyFile, "/"),
		"/proc/1/root" + marker,
		"/proc/self/root" + keyFile,
	}
	for _, user := range []string{"user", "root"} {
		for _, p := range reads {
			data, err := s.Files.As(user).Read(opCtx(t), p)
			if err == nil && (strings.Contains(string(data), secret) || strings.Contains(string(data), srv.APIKey)) {
				t.Errorf("as %s, Files.Read(%q) returned a host secret", user, p)
			}
		}
		res, _ := s.Commands.Run(opCtx(t), "cat "+marker+" "+keyFile, sdk.RunOptions{User: user})
		if res != nil && (strings.Contains(res.Stdout, secret) || strings.Contains(res.Stdout, srv.APIKey)) {
			t.Errorf("as %s, cat of host paths printed a host secret", user)
		}
	}
	escapes := []string{
		up + "tmp/sbx-e2e-escape-" + randHex(t, 6),
		"/tmp/sbx-e2e-escape-" + randHex(t, 6),
		"/home/user/" + up + "tmp/sbx-e2e-escape-" + randHex(t, 6),
	}
	for _, p := range escapes {
		_, _ = s.Files.As("root").Write(opCtx(t), p, []byte(secret))
		host := filepath.Join("/tmp", filepath.Base(p))
		if _, err := os.Stat(host); err == nil {
			os.Remove(host)
			t.Errorf("Files.Write(%q) created %s on the host", p, host)
		}
	}
	// Writing the host's files by their absolute path changes nothing there.
	_, _ = s.Files.As("root").Write(opCtx(t), marker, []byte("overwritten"))
	if got, _ := os.ReadFile(marker); string(got) != secret {
		t.Errorf("Files.Write(%q) changed the host file to %q", marker, got)
	}
}

func testIsolation(t *testing.T, srv *Server) {
	c := srv.Client(t)
	a := create(t, c, sdk.CreateOptions{})
	b := create(t, c, sdk.CreateOptions{})

	t.Run("host processes are invisible", func(t *testing.T) {
		// The server's command line names its unique data dir.
		res := run(t, a, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '; echo; ls /proc | grep -c '^[0-9]'", sdk.RunOptions{User: "root"})
		if strings.Contains(res.Stdout, srv.DataDir) {
			t.Errorf("the sandbox sees the sbx serve process:\n%s", res.Stdout)
		}
		if !strings.Contains(res.Stdout, "/.sbx/bin/envd") {
			t.Errorf("the sandbox's own process list lacks its init (envd), so the check proves nothing:\n%s", res.Stdout)
		}
	})
	t.Run("other sandboxes are invisible", func(t *testing.T) {
		token := randHex(t, 6)
		run(t, a, "echo "+token+" > /tmp/a-only", sdk.RunOptions{})
		h, err := a.Commands.Start(opCtx(t), "exec -a sleeper-"+token+" sleep 600", sdk.RunOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer h.Kill(context.WithoutCancel(t.Context()))
		if res := run(t, a, "cat /tmp/a-only; ps -eo args", sdk.RunOptions{}); strings.Count(res.Stdout, token) != 2 {
			t.Fatalf("marker file or process missing in A itself: %+v", res)
		}
		res, _ := b.Commands.Run(opCtx(t), "cat /tmp/a-only; ps -eo args", sdk.RunOptions{User: "root"})
		if res == nil || strings.Contains(res.Stdout, token) {
			t.Errorf("sandbox B sees sandbox A's file or process: %+v", res)
		}
	})
	t.Run("fork bomb and memory hog stay contained", func(t *testing.T) {
		bad := create(t, c, sdk.CreateOptions{})
		// The hog first: once the bomb runs, the sandbox's pids limit
		// (rightly) stops envd from starting anything else in it.
		hog, err := bad.Commands.Start(opCtx(t),
			`python3 -c 'a=[]
while True: a.append(bytearray(64<<20))'`, sdk.RunOptions{Timeout: 3 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		defer hog.Disconnect()
		bomb, err := bad.Commands.Start(opCtx(t), "f(){ f | f & }; f; sleep 600", sdk.RunOptions{Timeout: 3 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		defer bomb.Disconnect()
		// While both run: the other sandbox, the API and new sandboxes work.
		for i := range 3 {
			if res := run(t, b, "echo ok", sdk.RunOptions{}); res.Stdout != "ok\n" {
				t.Fatalf("round %d: sandbox B = %+v", i, res)
			}
			if r := srv.Raw(t, "GET", "/health", "", nil); r.Status != http.StatusOK && r.Status != http.StatusNoContent {
				t.Fatalf("round %d: server /health = %d", i, r.Status)
			}
			if _, err := c.List(opCtx(t), sdk.ListOptions{}); err != nil {
				t.Fatalf("round %d: List: %v", i, err)
			}
		}
		fresh := create(t, c, sdk.CreateOptions{})
		if res := run(t, fresh, "echo ok", sdk.RunOptions{}); res.Stdout != "ok\n" {
			t.Errorf("new sandbox during the bomb: %+v", res)
		}
		// The memory hog is stopped by its sandbox's limit, not by eating the host.
		if res, err := hog.Wait(opCtx(t)); err == nil {
			t.Errorf("memory hog exited cleanly: %+v", res)
		}
		if err := bad.Kill(opCtx(t)); err != nil {
			t.Errorf("kill the fork-bombed sandbox: %v", err)
		}
	})
}

// testNoLeftovers kills every sandbox and checks that none of the
// sandboxes the tests made keeps a container. Other containers may exist:
// the warm pool keeps pre-started ones that are not sandboxes yet.
func testNoLeftovers(t *testing.T, srv *Server) {
	c := srv.Client(t)
	list, err := c.List(opCtx(t), sdk.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list {
		createdIDs.Store(s.SandboxID, true)
		if err := c.Kill(opCtx(t), s.SandboxID); err != nil && !sdk.IsNotFound(err) {
			t.Errorf("kill %s: %v", s.SandboxID, err)
		}
	}
	ctx := opCtx(t)
	for {
		var left []string
		for _, ctr := range srv.CrunContainers(t) {
			createdIDs.Range(func(id, _ any) bool {
				if strings.Contains(ctr, id.(string)) {
					left = append(left, ctr)
				}
				return true
			})
		}
		if len(left) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("containers of killed sandboxes still in crun: %v", left)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
