package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sbxdev/sbx/sdk"
)

// TestLifecycleStartCommand (issue 13): a sandbox of a template with a
// start command, paused without memory, boots again from its files: the
// start command runs again (a new token, drawn when it starts) while the
// files stay; the state survives a restart of the server. With runsc
// installed the sandbox is restored from the template's snapshot under
// runsc first, so this also covers saving a runsc sandbox's files and
// booting them under the server's runtime. Snapshots and forks of the
// rebooted sandbox (now under crun) run the start command too; a fork of a
// sandbox still under runsc carries its processes (the same token) and
// says so. Driven through the Go SDK and the CLI.
func TestLifecycleStartCommand(t *testing.T) {
	s := StartServer(t)
	c := s.Client(t)
	dir := t.TempDir()
	writeContext(t, dir, map[string]string{"e2b.Dockerfile": snapshotDockerfile})
	if out, err := templateCLI(t, s, dir, "build", "--name", "life-app", "--ready-cmd=curl -sf http://127.0.0.1:8000"); err != nil {
		t.Fatalf("template build: %v\n%s", err, out)
	}
	sb, err := c.Create(t.Context(), sdk.CreateOptions{Template: "life-app"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Kill(context.Background(), sb.ID) })
	token := func(id string) string {
		tok, _, _ := strings.Cut(portGet(t, s, id, 8000), " ")
		return tok
	}
	first := token(sb.ID)
	runIn(t, sb, "echo kept > /home/user/kept.txt")

	if err := c.PauseWithoutMemory(t.Context(), sb.ID); err != nil {
		t.Fatal(err)
	}
	if _, tier := pauseTier(t, s, sb.ID); tier != "filesystem" {
		t.Errorf("pauseTier = %q, want filesystem", tier)
	}
	// A restart keeps it paused without memory.
	s.Stop(syscall.SIGTERM)
	s.Start(t)
	if state, tier := pauseTier(t, s, sb.ID); state != "paused" || tier != "filesystem" {
		t.Fatalf("after a restart: state %q tier %q, want paused/filesystem", state, tier)
	}
	// E2B's plain connect resumes it (201: resumed).
	if r := s.Raw(t, "POST", "/v2/sandboxes/"+sb.ID+"/connect", "{}", map[string]string{"X-API-Key": s.APIKey}); r.Status != 201 {
		t.Fatalf("connect after a restart = %d %s\n%s", r.Status, r.Body, s.Log())
	}
	again := handle(t, c, sb.ID)
	second := token(sb.ID)
	if second == "" || second == first {
		t.Errorf("token after the reboot %q, before %q: the start command did not run again", second, first)
	}
	if got := strings.TrimSpace(runIn(t, again, "cat /home/user/kept.txt /opt/built.txt")); got != "kept\nbuilt" {
		t.Errorf("files after the reboot: %q", got)
	}
	if rt := sandboxRuntime(t, s, sb.ID); rt != "crun" {
		t.Errorf("a rebooted sandbox runs under %q, want the server's runtime crun", rt)
	}

	// CLI: snapshot, list, fork, delete.
	env := []string{"--api-url", s.URL, "--api-key", s.APIKey}
	snapID := strings.TrimSpace(string(s.Run(t, append([]string{"snapshot", "create", sb.ID, "--name", "life-snap"}, env...)...)))
	if snapID != "life-snap:default" {
		t.Errorf("sbx snapshot create printed %q", snapID)
	}
	var listed []sdk.SnapshotInfo
	if err := json.Unmarshal(s.Run(t, append([]string{"snapshot", "list", "--sandbox", sb.ID, "--json"}, env...)...), &listed); err != nil ||
		len(listed) != 1 || listed[0].ID != snapID || listed[0].Memory {
		t.Errorf("sbx snapshot list --json = %+v, %v", listed, err)
	}
	var clones []struct {
		SandboxID string `json:"sandboxID"`
		Memory    bool   `json:"memory"`
	}
	if err := json.Unmarshal(s.Run(t, append([]string{"sandbox", "fork", sb.ID, "--count", "2", "--json"}, env...)...), &clones); err != nil || len(clones) != 2 {
		t.Fatalf("sbx sandbox fork --json = %+v, %v", clones, err)
	}
	from, err := c.Create(t.Context(), sdk.CreateOptions{Template: snapID})
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{from.ID}
	for _, cl := range clones {
		ids = append(ids, cl.SandboxID)
	}
	for _, id := range ids {
		t.Cleanup(func() { _ = c.Kill(context.Background(), id) })
		if tok := token(id); tok == "" || tok == second || tok == first {
			t.Errorf("sandbox %s serves token %q: its start command did not run (source: %q)", id, tok, second)
		}
		h := handle(t, c, id)
		if got := strings.TrimSpace(runIn(t, h, "cat /home/user/kept.txt")); got != "kept" {
			t.Errorf("sandbox %s lacks the source's files: %q", id, got)
		}
	}
	if out := string(s.Run(t, append([]string{"snapshot", "delete", snapID}, env...)...)); !strings.Contains(out, "deleted") {
		t.Errorf("sbx snapshot delete printed %q", out)
	}
	if _, err := os.Stat(filepath.Join(s.DataDir, "sandbox-snapshots", "life-snap")); err == nil {
		t.Errorf("a deleted snapshot's dir is still there")
	}
	// A sandbox started from the deleted snapshot still runs on its own
	// links to its layers; a killed one leaves none of its files behind.
	if got := strings.TrimSpace(runIn(t, from, "cat /home/user/kept.txt")); got != "kept" {
		t.Errorf("sandbox %s from a deleted snapshot: %q", from.ID, got)
	}
	for _, id := range []string{from.ID, sb.ID} {
		if err := c.Kill(t.Context(), id); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{filepath.Join("sandbox-layers", id), filepath.Join("boot-ids", id)} {
			if _, err := os.Stat(filepath.Join(s.DataDir, p)); !os.IsNotExist(err) {
				t.Errorf("%s of a killed sandbox: %v, want gone", p, err)
			}
		}
	}

	// A sandbox restored from the template snapshot runs under runsc,
	// which can checkpoint: its fork carries its memory.
	live, err := c.Create(t.Context(), sdk.CreateOptions{Template: "life-app"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Kill(context.Background(), live.ID) })
	if sandboxRuntime(t, s, live.ID) != "runsc" {
		t.Logf("no template snapshot (runsc missing?): memory forks not exercised")
		return
	}
	liveTok := token(live.ID)
	res, err := c.Fork(t.Context(), live.ID, 1, 0)
	if err != nil || len(res) != 1 || res[0].Err != nil {
		t.Fatalf("fork of a runsc sandbox = %+v, %v", res, err)
	}
	t.Cleanup(func() { _ = c.Kill(context.Background(), res[0].Sandbox.ID) })
	if !res[0].Memory {
		t.Errorf("fork of a runsc sandbox reports memory false")
	}
	if got := token(res[0].Sandbox.ID); got != liveTok {
		t.Errorf("memory clone serves token %q, source %q: its processes were not carried over", got, liveTok)
	}
	if got := token(live.ID); got != liveTok {
		t.Errorf("the source serves %q after the fork, %q before: it was not restored as it was", got, liveTok)
	}
	// Its snapshot carries its memory too, recorded in the shared table
	// as this node's, and starts here restored.
	msnap, err := c.CreateSnapshot(t.Context(), live.ID, "")
	if err != nil || !msnap.Memory {
		t.Fatalf("snapshot of a runsc sandbox = %+v, %v; want memory", msnap, err)
	}
	if listed, err := c.ListSnapshots(t.Context(), sdk.SnapshotListOptions{SandboxID: live.ID}); err != nil || len(listed) != 1 || !listed[0].Memory {
		t.Errorf("listed memory snapshot = %+v, %v", listed, err)
	}
	fromMem, err := c.Create(t.Context(), sdk.CreateOptions{Template: msnap.ID})
	if err != nil {
		t.Fatalf("create from a memory snapshot: %v", err)
	}
	t.Cleanup(func() { _ = c.Kill(context.Background(), fromMem.ID) })
	if got := token(fromMem.ID); got != liveTok {
		t.Errorf("sandbox from a memory snapshot serves %q, source %q: its processes were not restored", got, liveTok)
	}
}

// handle returns an SDK handle to a running sandbox: Reboot of a running
// sandbox only connects to it (its signature does not change with the
// SDK's Connect options).
func handle(t *testing.T, c *sdk.Client, id string) *sdk.Sandbox {
	t.Helper()
	h, err := c.Reboot(t.Context(), id, 0)
	if err != nil {
		t.Fatalf("connect to %s: %v", id, err)
	}
	return h
}
