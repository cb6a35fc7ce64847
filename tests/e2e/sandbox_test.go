package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/sdk"
)

// opWait bounds one step that should be quick, so a hang fails with a
// message instead of hitting the global test timeout.
const opWait = 2 * time.Minute

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func opCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), opWait)
	t.Cleanup(cancel)
	return ctx
}

// createdIDs records every sandbox the tests created, so leftover checks
// can look for their containers after the sandboxes are gone.
var createdIDs sync.Map

// create makes a sandbox and kills it at cleanup (ignoring "already gone").
func create(t *testing.T, c *sdk.Client, opts sdk.CreateOptions) *sdk.Sandbox {
	t.Helper()
	s, err := c.Create(opCtx(t), opts)
	if err != nil {
		t.Fatalf("Create(%+v): %v", opts, err)
	}
	createdIDs.Store(s.ID, true)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.Kill(ctx); err != nil && !sdk.IsNotFound(err) {
			t.Errorf("cleanup: kill %s: %v", s.ID, err)
		}
	})
	return s
}

func run(t *testing.T, s *sdk.Sandbox, cmd string, opts sdk.RunOptions) *sdk.CommandResult {
	t.Helper()
	res, err := s.Commands.Run(opCtx(t), cmd, opts)
	if err != nil {
		t.Fatalf("run %q in %s: %v", cmd, s.ID, err)
	}
	return res
}

// TestE2E drives one server through the SDK; subtests share it because a
// server start costs far more than a sandbox.
func TestE2E(t *testing.T) {
	srv := StartServer(t)
	c := srv.Client(t)

	t.Run("CreateRunKill", func(t *testing.T) { testCreateRunKill(t, c) })
	t.Run("Commands", func(t *testing.T) { testCommands(t, c) })
	t.Run("LoginShellForksNothing", func(t *testing.T) { testLoginShellForks(t, c) })
	t.Run("BackgroundAndStdin", func(t *testing.T) { testBackground(t, c) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, c) })
	t.Run("Files", func(t *testing.T) { testFiles(t, c) })
	t.Run("ListMetadataFilter", func(t *testing.T) { testList(t, c) })
	t.Run("PauseResume", func(t *testing.T) { testPauseResume(t, c) })
	t.Run("TimeoutExpiry", func(t *testing.T) { testTimeoutExpiry(t, c) })
	t.Run("KilledSandboxFailsCleanly", func(t *testing.T) { testKilled(t, c) })
	t.Run("Teams", func(t *testing.T) { testTeams(t, srv) })
	t.Run("BadInput", func(t *testing.T) { testBadInput(t, srv) })
	t.Run("FilesPathEscape", func(t *testing.T) { testPathEscape(t, srv) })
	t.Run("Isolation", func(t *testing.T) { testIsolation(t, srv) })
	t.Run("CLI", func(t *testing.T) { testCLI(t, srv) })
	t.Run("NoContainersLeftAfterKill", func(t *testing.T) { testNoLeftovers(t, srv) })
}

// testLoginShellForks: every SDK command runs in a login shell
// (bash -l -c); the base template's profiles must start no process of
// their own (Debian's forked id and, for root, mesg at every command). The
// spies sit first on the PATH the command is given, which the profiles
// use until /etc/profile sets its own.
func testLoginShellForks(t *testing.T, c *sdk.Client) {
	s := create(t, c, sdk.CreateOptions{Template: "base", Timeout: 5 * time.Minute})
	spy := `mkdir -p /tmp/spy && for p in id mesg tty; do
printf '#!/bin/sh\necho %s >> /tmp/spy.log\nexec /usr/bin/%s "$@"\n' $p $p > /tmp/spy/$p; chmod 755 /tmp/spy/$p; done
touch /tmp/spy.log && chmod 666 /tmp/spy.log`
	if res := run(t, s, spy, sdk.RunOptions{User: "root"}); res.ExitCode != 0 {
		t.Fatalf("set up the spies: %+v", res)
	}
	env := map[string]string{"PATH": "/tmp/spy:/usr/local/bin:/usr/bin:/bin"}
	for _, user := range []string{"root", "user"} {
		res := run(t, s, `echo "$PATH"`, sdk.RunOptions{User: user, Envs: env})
		wantSbin := user == "root"
		if strings.Contains(res.Stdout, "/usr/sbin") != wantSbin {
			t.Errorf("PATH of a %s login shell = %q; /usr/sbin in it should be %v", user, res.Stdout, wantSbin)
		}
	}
	if log := run(t, s, "cat /tmp/spy.log", sdk.RunOptions{}); log.Stdout != "" {
		t.Errorf("login shells of the base template started %q", log.Stdout)
	}
}

func testCreateRunKill(t *testing.T, c *sdk.Client) {
	s := create(t, c, sdk.CreateOptions{Template: "base", Timeout: 5 * time.Minute, Metadata: map[string]string{"test": "create"}})
	if s.ID == "" || s.EnvdAccessToken == "" || s.EnvdVersion == "" {
		t.Errorf("sandbox = %+v: want ID, envd access token and version", s)
	}
	if res := run(t, s, "echo hello", sdk.RunOptions{}); res.Stdout != "hello\n" || res.ExitCode != 0 {
		t.Errorf("echo hello = %+v", res)
	}
	info, err := c.Get(opCtx(t), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if info.State != sdk.StateRunning || info.Metadata["test"] != "create" || !info.EndAt.After(info.StartedAt) {
		t.Errorf("Get = %+v", info)
	}
	if running, err := s.IsRunning(opCtx(t)); err != nil || !running {
		t.Errorf("IsRunning = %v, %v", running, err)
	}
	if _, err := c.Metrics(opCtx(t), s.ID); err != nil {
		t.Errorf("Metrics: %v", err)
	}
	// Connect gives a working handle to the same sandbox.
	s2, err := c.Connect(opCtx(t), s.ID, sdk.ConnectOptions{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if res := run(t, s2, "echo again", sdk.RunOptions{}); res.Stdout != "again\n" {
		t.Errorf("through Connect: %+v", res)
	}

	if err := s.Kill(opCtx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(opCtx(t), s.ID); !sdk.IsNotFound(err) {
		t.Errorf("Get after kill = %v, want not found", err)
	}
	if err := c.Kill(opCtx(t), s.ID); !sdk.IsNotFound(err) {
		t.Errorf("second Kill = %v, want not found", err)
	}
	if running, err := s.IsRunning(opCtx(t)); err != nil || running {
		t.Errorf("IsRunning after kill = %v, %v; want false", running, err)
	}
}

func testCommands(t *testing.T, c *sdk.Client) {
	s := create(t, c, sdk.CreateOptions{EnvVars: map[string]string{"GLOBAL_VAR": "from-create"}})
	tests := []struct {
		name       string
		cmd        string
		opts       sdk.RunOptions
		wantStdout string
		wantStderr string
		wantExit   int
	}{
		{"stdout", "printf 'a\\nb'", sdk.RunOptions{}, "a\nb", "", 0},
		{"stderr", "echo oops >&2", sdk.RunOptions{}, "", "oops\n", 0},
		{"exit code", "exit 42", sdk.RunOptions{}, "", "", 42},
		{"both streams and failure", "echo out; echo err >&2; false", sdk.RunOptions{}, "out\n", "err\n", 1},
		{"global env", "echo $GLOBAL_VAR", sdk.RunOptions{}, "from-create\n", "", 0},
		{"command env", "echo $ONE", sdk.RunOptions{Envs: map[string]string{"ONE": "1"}}, "1\n", "", 0},
		{"command env does not leak", "echo \"[$ONE]\"", sdk.RunOptions{}, "[]\n", "", 0},
		{"sandbox env", "echo $E2B_SANDBOX", sdk.RunOptions{}, "true\n", "", 0},
		{"default cwd", "pwd", sdk.RunOptions{}, "/home/user\n", "", 0},
		{"cwd", "pwd", sdk.RunOptions{Cwd: "/tmp"}, "/tmp\n", "", 0},
		{"default user", "whoami", sdk.RunOptions{}, "user\n", "", 0},
		{"root user", "whoami", sdk.RunOptions{User: "root"}, "root\n", "", 0},
		{"binary-safe output", "printf '\\x00\\xff'", sdk.RunOptions{}, "\x00\xff", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var streamed strings.Builder
			tt.opts.OnStdout = func(chunk string) { streamed.WriteString(chunk) }
			res, err := s.Commands.Run(opCtx(t), tt.cmd, tt.opts)
			var exitErr *sdk.CommandExitError
			switch {
			case tt.wantExit == 0 && err != nil:
				t.Fatalf("Run: %v", err)
			case tt.wantExit != 0 && (!errors.As(err, &exitErr) || exitErr.ExitCode != tt.wantExit):
				t.Fatalf("Run error = %v, want exit code %d", err, tt.wantExit)
			}
			if res.Stdout != tt.wantStdout || res.Stderr != tt.wantStderr || res.ExitCode != tt.wantExit {
				t.Errorf("result = %+v, want stdout %q stderr %q exit %d", res, tt.wantStdout, tt.wantStderr, tt.wantExit)
			}
			if streamed.String() != tt.wantStdout {
				t.Errorf("OnStdout got %q, want %q", streamed.String(), tt.wantStdout)
			}
		})
	}
	t.Run("bad cwd", func(t *testing.T) {
		_, err := s.Commands.Run(opCtx(t), "pwd", sdk.RunOptions{Cwd: "/no/such/dir"})
		if err == nil {
			t.Fatal("Run with a missing cwd succeeded")
		}
	})
	t.Run("unknown user", func(t *testing.T) {
		_, err := s.Commands.Run(opCtx(t), "true", sdk.RunOptions{User: "nosuchuser"})
		if err == nil {
			t.Fatal("Run as an unknown user succeeded")
		}
	})
}

func testBackground(t *testing.T, c *sdk.Client) {
	s := create(t, c, sdk.CreateOptions{})
	ctx := opCtx(t)
	h, err := s.Commands.Start(ctx, "sleep 600", sdk.RunOptions{Tag: "sleeper"})
	if err != nil {
		t.Fatal(err)
	}
	procs, err := s.Commands.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(procs, func(p sdk.ProcessInfo) bool { return p.PID == h.PID }) {
		t.Errorf("Commands.List = %+v, want pid %d", procs, h.PID)
	}
	if err := h.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if res, err := h.Wait(ctx); err == nil || res == nil || res.ExitCode == 0 {
		t.Errorf("Wait after kill = %+v, %v; want a non-zero exit", res, err)
	}
	if err := s.Commands.Kill(ctx, h.PID); !sdk.IsNotFound(err) {
		t.Errorf("Kill of an exited process = %v, want not found", err)
	}

	cat, err := s.Commands.Start(ctx, "cat; echo done", sdk.RunOptions{Stdin: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := cat.SendStdin(ctx, "line one\n"); err != nil {
		t.Fatal(err)
	}
	if err := cat.CloseStdin(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := cat.Wait(ctx)
	if err != nil || res.Stdout != "line one\ndone\n" {
		t.Errorf("cat = %+v, %v", res, err)
	}
}

func testFiles(t *testing.T, c *sdk.Client) {
	s := create(t, c, sdk.CreateOptions{})
	ctx := opCtx(t)
	content := []byte("hello\x00world\n" + strings.Repeat("x", 100_000))
	w, err := s.Files.Write(ctx, "dir/sub/data.bin", content)
	if err != nil {
		t.Fatal(err)
	}
	if w.Path != "/home/user/dir/sub/data.bin" {
		t.Errorf("Write path = %q", w.Path)
	}
	if got, err := s.Files.Read(ctx, "/home/user/dir/sub/data.bin"); err != nil || !bytes.Equal(got, content) {
		t.Errorf("Read = %d bytes, %v; want the %d bytes written", len(got), err, len(content))
	}
	if res := run(t, s, "stat -c '%U %s' dir/sub/data.bin", sdk.RunOptions{}); res.Stdout != "user 100012\n" {
		t.Errorf("seen from a command: %q", res.Stdout)
	}
	info, err := s.Files.Stat(ctx, "dir/sub/data.bin")
	if err != nil || info.Type != sdk.FileTypeFile || info.Size != int64(len(content)) || info.Name != "data.bin" {
		t.Errorf("Stat = %+v, %v", info, err)
	}
	if created, err := s.Files.MakeDir(ctx, "dir/empty"); err != nil || !created {
		t.Errorf("MakeDir = %v, %v", created, err)
	}
	if created, err := s.Files.MakeDir(ctx, "dir/empty"); err != nil || created {
		t.Errorf("MakeDir again = %v, %v; want false, nil", created, err)
	}
	entries, err := s.Files.List(ctx, "dir", sdk.ListDirOptions{Depth: 1})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name+":"+string(e.Type))
	}
	slices.Sort(names)
	if strings.Join(names, ",") != "empty:dir,sub:dir" {
		t.Errorf("List(dir, 1) = %v", names)
	}
	if deep, err := s.Files.List(ctx, "dir", sdk.ListDirOptions{Depth: 2}); err != nil || len(deep) != 3 {
		t.Errorf("List(dir, 2) = %d entries, %v; want 3", len(deep), err)
	}
	if _, err := s.Files.Rename(ctx, "dir/sub/data.bin", "dir/moved.bin"); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Files.Exists(ctx, "dir/sub/data.bin"); ok || err != nil {
		t.Errorf("old path exists = %v, %v", ok, err)
	}
	if ok, err := s.Files.Exists(ctx, "dir/moved.bin"); !ok || err != nil {
		t.Errorf("new path exists = %v, %v", ok, err)
	}
	if err := s.Files.Remove(ctx, "dir"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Files.Read(ctx, "dir/moved.bin"); !sdk.IsNotFound(err) {
		t.Errorf("Read after Remove = %v, want not found", err)
	}
	if _, err := s.Files.Stat(ctx, "nope"); !sdk.IsNotFound(err) {
		t.Errorf("Stat(nope) = %v, want not found", err)
	}
	// Files are owned by the user they were written as. (envd writes as
	// root and chowns, like E2B's; "user" has passwordless sudo, so file
	// permissions inside a sandbox are not a security boundary.)
	if _, err := s.Files.As("root").Write(ctx, "/etc/sbx-test", []byte("x")); err != nil {
		t.Errorf("root write /etc/sbx-test: %v", err)
	}
	if res := run(t, s, "stat -c %U /etc/sbx-test", sdk.RunOptions{}); res.Stdout != "root\n" {
		t.Errorf("owner of a file written as root = %q", res.Stdout)
	}
}

func testList(t *testing.T, c *sdk.Client) {
	tag := randHex(t, 6)
	a := create(t, c, sdk.CreateOptions{Metadata: map[string]string{"run": tag, "who": "a"}})
	b := create(t, c, sdk.CreateOptions{Metadata: map[string]string{"run": tag, "who": "b & c"}})
	ids := func(list []sdk.SandboxInfo) []string {
		var out []string
		for _, s := range list {
			out = append(out, s.SandboxID)
		}
		slices.Sort(out)
		return out
	}
	both := []string{a.ID, b.ID}
	slices.Sort(both)
	tests := []struct {
		name string
		opts sdk.ListOptions
		want []string
	}{
		{"shared tag", sdk.ListOptions{Metadata: map[string]string{"run": tag}}, both},
		{"two pairs", sdk.ListOptions{Metadata: map[string]string{"run": tag, "who": "a"}}, []string{a.ID}},
		{"special characters", sdk.ListOptions{Metadata: map[string]string{"run": tag, "who": "b & c"}}, []string{b.ID}},
		{"running", sdk.ListOptions{Metadata: map[string]string{"run": tag}, State: []string{sdk.StateRunning}}, both},
		{"paused", sdk.ListOptions{Metadata: map[string]string{"run": tag}, State: []string{sdk.StatePaused}}, nil},
		{"no match", sdk.ListOptions{Metadata: map[string]string{"run": tag + "x"}}, nil},
		{"page size 1", sdk.ListOptions{Metadata: map[string]string{"run": tag}, Limit: 1}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.List(opCtx(t), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if tt.name == "page size 1" {
				if len(got) != 1 || !slices.Contains(both, got[0].SandboxID) {
					t.Errorf("List with Limit 1 = %v", ids(got))
				}
				return
			}
			if !slices.Equal(ids(got), tt.want) {
				t.Errorf("List = %v, want %v", ids(got), tt.want)
			}
		})
	}
	t.Run("pages", func(t *testing.T) {
		page, next, err := c.ListPage(opCtx(t), sdk.ListOptions{Metadata: map[string]string{"run": tag}, Limit: 1}, "")
		if err != nil || len(page) != 1 || next == "" {
			t.Fatalf("first page = %v, next %q, %v", ids(page), next, err)
		}
		page2, _, err := c.ListPage(opCtx(t), sdk.ListOptions{Metadata: map[string]string{"run": tag}, Limit: 1}, next)
		if err != nil || len(page2) != 1 || page2[0].SandboxID == page[0].SandboxID {
			t.Errorf("second page = %v, %v", ids(page2), err)
		}
	})
	if err := b.Kill(opCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.List(opCtx(t), sdk.ListOptions{Metadata: map[string]string{"run": tag}, State: []string{sdk.StateRunning}}); !slices.Equal(ids(got), []string{a.ID}) {
		t.Errorf("after kill: %v, want only %s", ids(got), a.ID)
	}
}

func testTimeoutExpiry(t *testing.T, c *sdk.Client) {
	s := create(t, c, sdk.CreateOptions{Timeout: 10 * time.Minute})
	if err := s.SetTimeout(opCtx(t), time.Second); err != nil {
		t.Fatal(err)
	}
	ctx := opCtx(t)
	for {
		info, err := c.Get(ctx, s.ID)
		if sdk.IsNotFound(err) {
			break
		}
		if err != nil {
			t.Fatalf("Get while waiting for expiry: %v", err)
		}
		if info.State != sdk.StateRunning {
			t.Fatalf("after its timeout the sandbox is %q, want it gone", info.State)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("sandbox %s still running %v after a 1 s timeout", s.ID, opWait)
		case <-time.After(200 * time.Millisecond):
		}
	}
	if running, err := s.IsRunning(opCtx(t)); err != nil || running {
		t.Errorf("IsRunning after expiry = %v, %v", running, err)
	}
	if _, err := s.Commands.Run(opCtx(t), "true", sdk.RunOptions{}); !sdk.IsSandboxNotRunning(err) {
		t.Errorf("Run after expiry = %v, want IsSandboxNotRunning", err)
	}
}

func testKilled(t *testing.T, c *sdk.Client) {
	s := create(t, c, sdk.CreateOptions{})
	ctx := opCtx(t)
	// A command running while the sandbox is killed ends with an error.
	h, err := s.Commands.Start(ctx, "sleep 600", sdk.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if res, err := h.Wait(ctx); err == nil {
		t.Errorf("Wait on a command of a killed sandbox = %+v, want an error", res)
	} else if !sdk.IsSandboxNotRunning(err) {
		t.Errorf("Wait error = %v, want IsSandboxNotRunning", err)
	}
	// New calls fail cleanly and quickly.
	if _, err := s.Commands.Run(ctx, "echo hi", sdk.RunOptions{}); !sdk.IsSandboxNotRunning(err) {
		t.Errorf("Run after kill = %v, want IsSandboxNotRunning", err)
	}
	if _, err := s.Files.Read(ctx, "/etc/hostname"); !sdk.IsSandboxNotRunning(err) {
		t.Errorf("Read after kill = %v, want IsSandboxNotRunning", err)
	}
	if _, err := s.Files.Write(ctx, "x", []byte("x")); !sdk.IsSandboxNotRunning(err) {
		t.Errorf("Write after kill = %v, want IsSandboxNotRunning", err)
	}
}

func testPauseResume(t *testing.T, c *sdk.Client) {
	s := create(t, c, sdk.CreateOptions{})
	ctx := opCtx(t)
	if _, err := s.Files.Write(ctx, "state.txt", []byte("before pause")); err != nil {
		t.Fatal(err)
	}
	h, err := s.Commands.Start(ctx, "sleep 600", sdk.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Disconnect()
	if err := s.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.State != sdk.StatePaused {
		t.Fatalf("Info after pause = %+v, %v; want state paused", info, err)
	}
	if running, err := s.IsRunning(ctx); err != nil || running {
		t.Errorf("IsRunning while paused = %v, %v; want false", running, err)
	}
	if _, err := s.Commands.Run(ctx, "true", sdk.RunOptions{}); !sdk.IsSandboxNotRunning(err) {
		t.Errorf("Run while paused = %v, want IsSandboxNotRunning", err)
	}
	if err := s.Pause(ctx); !sdk.IsConflict(err) {
		t.Errorf("second Pause = %v, want conflict (409)", err)
	}
	paused, err := c.List(ctx, sdk.ListOptions{State: []string{sdk.StatePaused}})
	if err != nil || !slices.ContainsFunc(paused, func(i sdk.SandboxInfo) bool { return i.SandboxID == s.ID }) {
		t.Errorf("List(paused) = %d sandboxes, %v; want %s among them", len(paused), err, s.ID)
	}

	r, err := c.Resume(ctx, s.ID, sdk.ConnectOptions{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if info, err := r.Info(ctx); err != nil || info.State != sdk.StateRunning {
		t.Errorf("Info after resume = %+v, %v", info, err)
	}
	if res := run(t, r, "cat state.txt", sdk.RunOptions{}); res.Stdout != "before pause" {
		t.Errorf("file after resume = %q", res.Stdout)
	}
	procs, err := r.Commands.List(ctx)
	if err != nil || !slices.ContainsFunc(procs, func(p sdk.ProcessInfo) bool { return p.PID == h.PID }) {
		t.Errorf("process %d did not survive pause/resume: %+v, %v", h.PID, procs, err)
	}
}
