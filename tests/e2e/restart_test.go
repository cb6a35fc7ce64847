package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/sdk"
)

// TestRestartSafety kills the server with SIGKILL while a sandbox runs and
// starts it again on the same data dir: the sandbox must be either usable or
// gone, and crun must hold no container the server does not know.
func TestRestartSafety(t *testing.T) {
	srv := StartServer(t)
	c := srv.Client(t)
	s := create(t, c, sdk.CreateOptions{Timeout: 10 * time.Minute, Metadata: map[string]string{"restart": "yes"}})
	if _, err := s.Files.Write(opCtx(t), "before.txt", []byte("kept")); err != nil {
		t.Fatal(err)
	}

	// Everything crun runs before the crash: the sandbox and warm-pool
	// members. After the restart each must be a listed sandbox or gone;
	// pool members started by the new process are not our concern here.
	before := srv.CrunContainers(t)
	if !slices.ContainsFunc(before, func(ctr string) bool { return strings.Contains(ctr, s.ID) }) {
		t.Fatalf("crun does not list sandbox %s before the restart: %v", s.ID, before)
	}
	srv.Stop(syscall.SIGKILL)
	srv.Start(t)

	ctx := opCtx(t)
	for {
		running, err := c.List(ctx, sdk.ListOptions{State: []string{sdk.StateRunning}})
		if err != nil {
			t.Fatalf("List after restart: %v", err)
		}
		var ids []string
		for _, r := range running {
			ids = append(ids, r.SandboxID)
		}
		now := srv.CrunContainers(t)
		orphans := slices.DeleteFunc(slices.Clone(before), func(ctr string) bool {
			return !slices.Contains(now, ctr) || slices.ContainsFunc(ids, func(id string) bool { return strings.Contains(ctr, id) })
		})
		if len(orphans) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("after restart crun still runs containers from before it that the server does not list as running sandboxes: %v (running: %v)", orphans, ids)
		case <-time.After(200 * time.Millisecond):
		}
	}

	info, err := c.Get(opCtx(t), s.ID)
	switch {
	case sdk.IsNotFound(err):
		t.Logf("sandbox %s was cleaned up at restart", s.ID)
		if _, err := s.Commands.Run(opCtx(t), "true", sdk.RunOptions{}); !sdk.IsSandboxNotRunning(err) {
			t.Errorf("Run in the cleaned-up sandbox = %v, want IsSandboxNotRunning", err)
		}
	case err != nil:
		t.Fatalf("Get after restart: %v", err)
	case info.State == sdk.StateRunning:
		t.Logf("sandbox %s was reattached at restart", s.ID)
		s2, err := c.Connect(opCtx(t), s.ID, sdk.ConnectOptions{Timeout: time.Minute})
		if err != nil {
			t.Fatalf("Connect to the reattached sandbox: %v", err)
		}
		if res := run(t, s2, "cat before.txt", sdk.RunOptions{}); res.Stdout != "kept" {
			t.Errorf("file written before the restart = %q", res.Stdout)
		}
	default:
		t.Errorf("after restart the sandbox is %q; want running or gone", info.State)
	}
	// Either way, a new sandbox works and a kill leaves nothing behind.
	fresh := create(t, c, sdk.CreateOptions{})
	if res := run(t, fresh, "echo ok", sdk.RunOptions{}); res.Stdout != "ok\n" {
		t.Errorf("new sandbox after restart: %+v", res)
	}
	testNoLeftovers(t, srv)
}

// testCLI drives `bin/sbx sandbox ...` as a user would.
func testCLI(t *testing.T, srv *Server) {
	cli := func(t *testing.T, args ...string) (stdout, stderr string, code int) {
		t.Helper()
		cmd := exec.CommandContext(opCtx(t), srv.Bin, args...)
		cmd.Env = append(os.Environ(), "E2B_API_URL="+srv.URL, "E2B_SANDBOX_URL="+srv.URL, "E2B_API_KEY="+srv.APIKey)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("sbx %v: %v", args, err)
		}
		return o.String(), e.String(), cmd.ProcessState.ExitCode()
	}
	tag := randHex(t, 6)
	out, errOut, code := cli(t, "sandbox", "create", "--template", "base", "--timeout", "300", "--metadata", "cli="+tag, "--env", "FOO=bar", "--json")
	if code != 0 {
		t.Fatalf("sandbox create: exit %d: %s", code, errOut)
	}
	var created struct{ SandboxID string }
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.SandboxID == "" {
		t.Fatalf("create --json printed %q: %v", out, err)
	}
	id := created.SandboxID
	t.Cleanup(func() { srv.Client(t).Kill(t.Context(), id) })

	out, _, code = cli(t, "sandbox", "list", "--metadata", "cli="+tag, "--json")
	var listed []struct{ SandboxID string }
	if err := json.Unmarshal([]byte(out), &listed); code != 0 || err != nil || len(listed) != 1 || listed[0].SandboxID != id {
		t.Errorf("list --json = exit %d %q", code, out)
	}
	if out, _, code = cli(t, "sandbox", "list"); code != 0 || !strings.Contains(out, id) {
		t.Errorf("list table = exit %d %q", code, out)
	}
	if out, _, code = cli(t, "sandbox", "info", id, "--json"); code != 0 || !strings.Contains(out, tag) {
		t.Errorf("info --json = exit %d %q", code, out)
	}
	if out, _, code = cli(t, "sandbox", "info", id); code != 0 || !strings.Contains(out, "Template    base") ||
		!strings.Contains(out, "At timeout  kill") || !regexp.MustCompile(`Runtime +(crun|runc|runsc)`).MatchString(out) {
		t.Errorf("info = exit %d %q; want the template name, lifecycle and runtime", code, out)
	}
	out, errOut, code = cli(t, "sandbox", "exec", id, "--", "echo $FOO; echo to-stderr >&2; exit 7")
	if code != 7 || out != "bar\n" || !strings.Contains(errOut, "to-stderr") {
		t.Errorf("exec = exit %d stdout %q stderr %q; want 7, bar, to-stderr", code, out, errOut)
	}
	if out, _, code = cli(t, "sandbox", "exec", id, "--", "printf", "%s|", "a b", "it's"); code != 0 || out != "a b|it's|" {
		t.Errorf("exec with quoted args = exit %d %q", code, out)
	}
	stdinCmd := exec.CommandContext(opCtx(t), srv.Bin, "sandbox", "exec", "--stdin", id, "--", "wc -c; echo done")
	stdinCmd.Env = append(os.Environ(), "E2B_API_URL="+srv.URL, "E2B_API_KEY="+srv.APIKey)
	stdinCmd.Stdin = strings.NewReader(strings.Repeat("z", 200_000))
	var stdinErr bytes.Buffer
	stdinCmd.Stderr = &stdinErr
	if out, err := stdinCmd.Output(); err != nil || string(out) != "200000\ndone\n" {
		t.Errorf("exec --stdin = %q, %v (stderr %q); want 200000 bytes counted", out, err, stdinErr.String())
	}
	// Exit statuses: 124 for a timeout (as timeout(1)), 2 for a wrong
	// command line, before anything reaches the server.
	if _, errOut, code = cli(t, "sandbox", "exec", "--timeout", "1", id, "--", "sleep 30"); code != 124 {
		t.Errorf("exec past its --timeout = exit %d %q; want 124", code, errOut)
	}
	for _, args := range [][]string{
		{"sandbox", "nosuch"}, {"nosuch"}, {"sandbox", "kill"}, {"sandbox", "list", "--bogus"},
		{"sandbox", "create", "--timeout", "soon"}, {"sandbox", "exec", id, "--env", "NOEQUALS", "--", "true"},
		{"webhook", "update", "x", "--enable", "--disable"},
	} {
		if _, errOut, code = cli(t, args...); code != 2 || !strings.Contains(errOut, "--help' for usage") {
			t.Errorf("sbx %v = exit %d %q; want 2 and a pointer to --help", args, code, errOut)
		}
	}
	if _, _, code = cli(t, "sandbox", "info", "nosuchsandbox0000000"); code != 1 {
		t.Errorf("info of a missing sandbox = exit %d, want 1", code)
	}
	// Webhooks are named by ID or name; an ambiguous name lists the IDs.
	hook := "hook-" + tag
	var hookIDs []string
	for range 2 {
		out, errOut, code := cli(t, "webhook", "create", "--name", hook, "--url", "http://example.com/"+tag)
		m := regexp.MustCompile(`Created webhook (\S+)`).FindStringSubmatch(out)
		if code != 0 || m == nil {
			t.Fatalf("webhook create = exit %d %q %q", code, out, errOut)
		}
		hookIDs = append(hookIDs, m[1])
		if len(hookIDs) == 1 {
			if out, errOut, code := cli(t, "webhook", "deliveries", hook, "--json"); code != 0 || !strings.Contains(out, `"data"`) {
				t.Errorf("webhook deliveries NAME = exit %d %q %q", code, out, errOut)
			}
		}
	}
	if _, errOut, code := cli(t, "webhook", "deliveries", hook); code != 1 || !strings.Contains(errOut, hookIDs[0]) || !strings.Contains(errOut, hookIDs[1]) {
		t.Errorf("deliveries of an ambiguous name = exit %d %q; want both IDs", code, errOut)
	}
	for _, h := range hookIDs {
		if _, errOut, code := cli(t, "webhook", "delete", h); code != 0 {
			t.Errorf("webhook delete = exit %d %q", code, errOut)
		}
	}
	// Teams go through the server in E2B_API_URL with the admin key; no
	// data dir is read or created without --data-dir.
	_, statErr := os.Stat("/var/lib/sbx")
	teamCmd := exec.CommandContext(opCtx(t), srv.Bin, "team", "list", "--json")
	teamCmd.Env = append(os.Environ(), "E2B_API_URL="+srv.URL, "SBX_ADMIN_KEY="+srv.AdminKey(t))
	if out, err := teamCmd.CombinedOutput(); err != nil || !strings.Contains(string(out), `"default"`) {
		t.Errorf("team list with E2B_API_URL and SBX_ADMIN_KEY = %v %q", err, out)
	}
	if _, err := os.Stat("/var/lib/sbx"); errors.Is(statErr, os.ErrNotExist) && err == nil {
		t.Errorf("sbx team list created /var/lib/sbx")
	}
	if _, _, code = cli(t, "sandbox", "timeout", id, "600"); code != 0 {
		t.Errorf("timeout exit %d", code)
	}
	if _, errOut, code = cli(t, "sandbox", "kill", id); code != 0 {
		t.Errorf("kill = exit %d %s", code, errOut)
	}
	if _, errOut, code = cli(t, "sandbox", "info", id); code == 0 || !strings.Contains(errOut, "404") {
		t.Errorf("info after kill = exit %d %q; want a not-found error", code, errOut)
	}
	cmd := exec.CommandContext(opCtx(t), srv.Bin, "sandbox", "list")
	cmd.Env = append(os.Environ(), "E2B_API_KEY=")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "sbx env") {
		t.Errorf("list without a key = %v %q; want an error pointing at sbx env", err, out)
	}
}
