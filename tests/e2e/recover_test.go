package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/sdk"
	"github.com/sbxdev/sbx/tests/harness"
)

// TestRestartLostSandboxes stops the server, deletes one sandbox's
// container behind its back with crun (as a host reboot or a wiped runtime
// state dir would lose it) and starts the server again on the same data
// dir. The lost sandbox must be recorded killed (lost_on_restart) with a
// killed event, answer DELETE with 404, and leave nothing on the host; one
// whose end time passed while the server was down must be killed as a
// timeout; a running one and one paused without memory must be adopted.
// The last case restarts on another port, so under another default node
// name: before the fix such a server left every earlier row listed
// running, past its end time, with DELETE answering 404.
func TestRestartLostSandboxes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sig     syscall.Signal
		newPort bool
	}{{"SIGTERM", syscall.SIGTERM, false}, {"SIGKILL", syscall.SIGKILL, false}, {"new port", syscall.SIGTERM, true}} {
		t.Run(tc.name, func(t *testing.T) { testRestartLost(t, tc.sig, tc.newPort) })
	}
}

func testRestartLost(t *testing.T, sig syscall.Signal, newPort bool) {
	srv := StartServer(t)
	c := srv.Client(t)
	opts := sdk.CreateOptions{Timeout: 10 * time.Minute}
	// Not create(): its cleanup kills through the first address, and the
	// last case moves the server; testNoLeftovers kills what is left.
	mk := func() *sdk.Sandbox {
		s, err := c.Create(opCtx(t), opts)
		if err != nil {
			t.Fatal(err)
		}
		createdIDs.Store(s.ID, true)
		return s
	}
	lost, kept, expired, fsPaused := mk(), mk(), mk(), mk()
	for _, s := range []*sdk.Sandbox{kept, fsPaused} {
		if _, err := s.Files.Write(opCtx(t), "before.txt", []byte("kept")); err != nil {
			t.Fatal(err)
		}
	}
	// The host end of the lost sandbox's veth: its eth0's peer index.
	iflink := strings.TrimSpace(run(t, lost, "cat /sys/class/net/eth0/iflink", sdk.RunOptions{}).Stdout)
	if _, err := strconv.Atoi(iflink); err != nil {
		t.Fatalf("iflink of %s: %q", lost.ID, iflink)
	}
	if err := c.PauseWithoutMemory(opCtx(t), fsPaused.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.SetTimeout(opCtx(t), expired.ID, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	info, err := c.Get(opCtx(t), expired.ID)
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop(sig)

	root := filepath.Join(srv.DataDir, "runtime", "crun")
	ctr := ""
	for _, name := range srv.CrunContainers(t) {
		if strings.Contains(name, lost.ID) {
			ctr = name
		}
	}
	if ctr == "" {
		t.Fatalf("crun does not list sandbox %s while the server is down", lost.ID)
	}
	if out, err := exec.Command("crun", "--root", root, "delete", "--force", ctr).CombinedOutput(); err != nil {
		t.Fatalf("crun delete --force %s: %v: %s", ctr, err, out)
	}
	// Start again only once the shortened end time has passed (whether the
	// old process already killed it before it stopped does not matter).
	time.Sleep(time.Until(info.EndAt) + time.Second)
	if newPort {
		srv.Addr = harness.FreeAddr(t)
		srv.URL = "http://" + srv.Addr
	}
	srv.Start(t)
	c = srv.Client(t)

	requireKilledWith(t, srv, lost.ID, "lost_on_restart")
	requireKilledWith(t, srv, expired.ID, "timeout")
	running, err := c.List(opCtx(t), sdk.ListOptions{State: []string{sdk.StateRunning}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range running {
		if r.SandboxID == lost.ID || r.SandboxID == expired.ID {
			t.Errorf("List(running) after the restart still lists %s", r.SandboxID)
		}
	}
	if err := c.Kill(opCtx(t), lost.ID); !sdk.IsNotFound(err) {
		t.Errorf("DELETE of the lost sandbox = %v; want not found", err)
	}
	requireNothingLeft(t, srv, lost.ID, iflink)

	// The intact one is adopted and runs commands; the paused one resumes
	// from its saved filesystem.
	for _, s := range []*sdk.Sandbox{kept, fsPaused} {
		s2, err := c.Connect(opCtx(t), s.ID, sdk.ConnectOptions{Timeout: time.Minute})
		if err != nil {
			t.Fatalf("Connect to %s after the restart: %v", s.ID, err)
		}
		if res := run(t, s2, "cat before.txt", sdk.RunOptions{}); res.Stdout != "kept" {
			t.Errorf("file written in %s before the restart = %q", s.ID, res.Stdout)
		}
	}
	testNoLeftovers(t, srv)
}

// requireKilledWith checks that GET answers 404 naming reason and that a
// killed event with that reason was recorded.
func requireKilledWith(t *testing.T, srv *Server, id, reason string) {
	t.Helper()
	key := map[string]string{"X-API-Key": srv.APIKey}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		resp := srv.Raw(t, "GET", "/sandboxes/"+id, "", key)
		if resp.Status == http.StatusNotFound && strings.Contains(resp.Body, reason) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("after the restart GET /sandboxes/%s = %d %s; want 404 killed (%s)", id, resp.Status, resp.Body, reason)
		case <-time.After(200 * time.Millisecond):
		}
	}
	resp := srv.Raw(t, "GET", "/events/sandboxes/"+id, "", key)
	var evs []sdk.Event
	if err := json.Unmarshal([]byte(resp.Body), &evs); err != nil {
		t.Fatalf("GET /events/sandboxes/%s: %d %s", id, resp.Status, resp.Body)
	}
	var reasons []any
	for _, ev := range evs {
		if ev.Type == "sandbox.lifecycle.killed" {
			reasons = append(reasons, ev.EventData["kill_reason"])
		}
	}
	if len(reasons) != 1 || reasons[0] != reason {
		t.Errorf("killed events of %s carry reasons %v; want exactly one, %s", id, reasons, reason)
	}
}

// requireNothingLeft checks that nothing of a sandbox is left on the host:
// mounts, network namespace, host veth (by index), cgroups, files.
func requireNothingLeft(t *testing.T, srv *Server, id, hostIfIndex string) {
	t.Helper()
	ctx := opCtx(t)
	for {
		var left []string
		mounts, _ := os.ReadFile("/proc/self/mountinfo")
		for _, line := range strings.Split(string(mounts), "\n") {
			if strings.Contains(line, id) {
				left = append(left, "mount "+strings.Fields(line)[4])
			}
		}
		cgroups, _ := filepath.Glob("/sys/fs/cgroup/*/sbx/" + id)
		left = append(left, cgroups...)
		for _, p := range []string{"run", "sandboxes", "netns", "agent-keys", "boot-ids", "sandbox-layers", "checkpoints", "specs/" + id + ".json"} {
			if !strings.HasSuffix(p, ".json") {
				p = filepath.Join(p, id)
			}
			if _, err := os.Stat(filepath.Join(srv.DataDir, p)); err == nil {
				left = append(left, p)
			}
		}
		ifs, _ := filepath.Glob("/sys/class/net/sbx-*/ifindex")
		for _, f := range ifs {
			if b, _ := os.ReadFile(f); strings.TrimSpace(string(b)) == hostIfIndex {
				left = append(left, "veth "+filepath.Base(filepath.Dir(f)))
			}
		}
		if slices.ContainsFunc(srv.CrunContainers(t), func(c string) bool { return strings.Contains(c, id) }) {
			left = append(left, "crun container")
		}
		if len(left) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("lost sandbox %s still holds %v", id, left)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
