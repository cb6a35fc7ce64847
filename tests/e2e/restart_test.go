package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
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
		s2, err := c.Connect(opCtx(t), s.ID, time.Minute)
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
