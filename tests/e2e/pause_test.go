package e2e

import (
	"encoding/json"
	"fmt"
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

	"github.com/sbxdev/sbx/internal/testenv"

	"github.com/sbxdev/sbx/sdk"
)

// runscPlatform is gVisor's ptrace platform for the disk-tier tests: with the
// default systrap platform gVisor sometimes loses a restored sandbox when it
// is checkpointed again under load ("failed getting response from syscall
// thread"), a gVisor bug that is not ours to hide with retries.
const runscPlatform = "--runtime-arg=--platform=ptrace"

// requireRunsc skips (or, with SBX_REQUIRE_INTEGRATION=1, fails) when runsc
// is missing; what names the feature that needs it (the only runtime here
// that checkpoints: the disk tier of pause, template snapshots).
func requireRunsc(t testing.TB, what string) {
	t.Helper()
	if _, err := exec.LookPath("runsc"); err != nil {
		testenv.Skip(t, "%s needs gVisor's runsc on PATH (scripts/install-deps.sh builds it from the Go module proxy)", what)
	}
}

// pauseTier reads the sbx extension field of GET /sandboxes/{id}.
func pauseTier(t *testing.T, srv *Server, id string) (state, tier string) {
	t.Helper()
	r := srv.Raw(t, http.MethodGet, "/sandboxes/"+id, "", map[string]string{"X-API-Key": srv.APIKey})
	if r.Status != http.StatusOK {
		t.Fatalf("GET /sandboxes/%s = %d %s", id, r.Status, r.Body)
	}
	var body struct {
		State     string `json:"state"`
		PauseTier string `json:"pauseTier"`
	}
	if err := json.Unmarshal([]byte(r.Body), &body); err != nil {
		t.Fatalf("GET /sandboxes/%s: %v: %s", id, err, r.Body)
	}
	return body.State, body.PauseTier
}

func pauseTo(t *testing.T, srv *Server, id, tier string) rawResponse {
	t.Helper()
	return srv.Raw(t, http.MethodPost, "/sandboxes/"+id+"/pause?tier="+tier, "", map[string]string{"X-API-Key": srv.APIKey})
}

// counter reads the value a background shell loop keeps writing; the
// loop's count lives only in the shell's memory.
func counter(t *testing.T, s *sdk.Sandbox) int {
	t.Helper()
	out := strings.TrimSpace(run(t, s, "cat /tmp/count 2>/dev/null || echo 0", sdk.RunOptions{}).Stdout)
	n, err := strconv.Atoi(out)
	if err != nil {
		t.Fatalf("counter file holds %q", out)
	}
	return n
}

// waitCounterAbove polls until the counter passes min (it keeps counting).
func waitCounterAbove(t *testing.T, s *sdk.Sandbox, min int) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := counter(t, s)
		if n > min {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter stuck at %d, want above %d: the process does not run", n, min)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const counterLoop = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done"

// TestPauseDiskTier: pause, force the disk tier, restart `sbx serve`,
// connect: processes, memory, files and env are intact; then the same for
// the memory tier across a restart, and a sandbox going to disk again and
// again.
func TestPauseDiskTier(t *testing.T) {
	requireRunsc(t, "the disk tier of pause")
	srv := StartServer(t, "--runtime", "runsc", runscPlatform, "--pool", "base=0", "--pool", "code-interpreter=0")
	c := srv.Client(t)
	s := create(t, c, sdk.CreateOptions{Timeout: 10 * time.Minute, EnvVars: map[string]string{"PAUSE_ENV": "kept-env"}})
	ctx := opCtx(t)
	if _, err := s.Files.Write(ctx, "state.txt", []byte("before pause")); err != nil {
		t.Fatal(err)
	}
	h, err := s.Commands.Start(ctx, counterLoop, sdk.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h.Disconnect()
	before := waitCounterAbove(t, s, 5)

	if r := pauseTo(t, srv, s.ID, "disk"); r.Status != http.StatusNoContent {
		t.Fatalf("pause?tier=disk = %d %s", r.Status, r.Body)
	}
	if st, tier := pauseTier(t, srv, s.ID); st != "paused" || tier != "disk" {
		t.Fatalf("after pause?tier=disk: state %q tier %q; want paused, disk", st, tier)
	}
	if r := pauseTo(t, srv, s.ID, "disk"); r.Status != http.StatusConflict {
		t.Errorf("second pause?tier=disk = %d %s; want 409", r.Status, r.Body)
	}
	// Memory freed: no process of the sandbox is left on the host.
	if out, _ := exec.Command("pgrep", "-f", "runsc.*"+s.ID).Output(); len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("runsc processes of the disk-tier sandbox still run: %s", out)
	}
	if _, err := os.Stat(filepath.Join(srv.DataDir, "checkpoints", s.ID)); err != nil {
		t.Errorf("no checkpoint on disk: %v", err)
	}

	srv.Stop(syscall.SIGTERM)
	srv.Start(t)
	if st, tier := pauseTier(t, srv, s.ID); st != "paused" || tier != "disk" {
		t.Fatalf("after restart: state %q tier %q; want paused, disk", st, tier)
	}
	r, err := c.Connect(opCtx(t), s.ID, sdk.ConnectOptions{Timeout: 5 * time.Minute})
	if err != nil {
		t.Fatalf("Connect to the disk-tier sandbox after a restart: %v", err)
	}
	after := waitCounterAbove(t, r, before)
	if after < before {
		t.Fatalf("counter after restore %d < %d before: memory lost", after, before)
	}
	if res := run(t, r, "cat state.txt; echo; echo $PAUSE_ENV", sdk.RunOptions{}); res.Stdout != "before pause\nkept-env\n" {
		t.Errorf("file and env after restore = %q", res.Stdout)
	}
	if _, err := os.Stat(filepath.Join(srv.DataDir, "checkpoints", s.ID)); !os.IsNotExist(err) {
		t.Errorf("used checkpoint not removed after restore: %v", err)
	}

	// The memory tier across a restart: the frozen container is reattached.
	if err := r.Pause(opCtx(t)); err != nil {
		t.Fatal(err)
	}
	if _, tier := pauseTier(t, srv, s.ID); tier != "memory" {
		t.Errorf("plain pause tier = %q; want memory", tier)
	}
	srv.Stop(syscall.SIGTERM)
	srv.Start(t)
	if st, tier := pauseTier(t, srv, s.ID); st != "paused" || tier != "memory" {
		t.Fatalf("after restart: state %q tier %q; want paused, memory", st, tier)
	}
	r, err = c.Connect(opCtx(t), s.ID, sdk.ConnectOptions{Timeout: 5 * time.Minute})
	if err != nil {
		t.Fatalf("Connect to the frozen sandbox after a restart: %v", err)
	}
	now := waitCounterAbove(t, r, after)

	// Disk again and again (a restored kernel checkpoints differently).
	for i := range 3 {
		if r := pauseTo(t, srv, s.ID, "disk"); r.Status != http.StatusNoContent {
			t.Fatalf("cycle %d: pause?tier=disk = %d %s", i, r.Status, r.Body)
		}
		if r, err = c.Connect(opCtx(t), s.ID, sdk.ConnectOptions{Timeout: 5 * time.Minute}); err != nil {
			t.Fatalf("cycle %d: Connect: %v", i, err)
		}
		now = waitCounterAbove(t, r, now)
	}
	if procs, err := r.Commands.List(opCtx(t)); err != nil || !slices.ContainsFunc(procs, func(p sdk.ProcessInfo) bool { return p.PID == h.PID }) {
		t.Errorf("counter process %d not listed after the cycles: %+v, %v", h.PID, procs, err)
	}
}

// TestPauseDiskAfterIdle: with --pause-disk-after a paused sandbox moves to
// disk by itself, and shutdown moves the rest.
func TestPauseDiskAfterIdle(t *testing.T) {
	requireRunsc(t, "the disk tier of pause")
	srv := StartServer(t, "--runtime", "runsc", runscPlatform, "--pool", "base=0", "--pool", "code-interpreter=0", "--pause-disk-after", "1s")
	c := srv.Client(t)
	s := create(t, c, sdk.CreateOptions{})
	if _, err := s.Files.Write(opCtx(t), "idle.txt", []byte("idle")); err != nil {
		t.Fatal(err)
	}
	if err := s.Pause(opCtx(t)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, tier := pauseTier(t, srv, s.ID); tier == "disk" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox paused for a minute is still not on disk (--pause-disk-after 1s)")
		}
		time.Sleep(200 * time.Millisecond)
	}
	r, err := c.Connect(opCtx(t), s.ID, sdk.ConnectOptions{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if res := run(t, r, "cat idle.txt", sdk.RunOptions{}); res.Stdout != "idle" {
		t.Errorf("file after restore = %q", res.Stdout)
	}

	// Killing a sandbox on disk removes its checkpoint.
	if r := pauseTo(t, srv, s.ID, "disk"); r.Status != http.StatusNoContent {
		t.Fatalf("pause?tier=disk = %d %s", r.Status, r.Body)
	}
	if err := c.Kill(opCtx(t), s.ID); err != nil {
		t.Fatalf("Kill of a disk-tier sandbox: %v", err)
	}
	if _, err := c.Get(opCtx(t), s.ID); !sdk.IsNotFound(err) {
		t.Errorf("Get after kill = %v; want not found", err)
	}
	// A kill answers once nothing runs; the files go in the teardown that
	// follows it in the background.
	for _, dir := range []string{filepath.Join(srv.DataDir, "checkpoints", s.ID), filepath.Join(srv.DataDir, "sandboxes", s.ID)} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := os.Stat(dir)
			if os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s left 30 s after the kill: %v", dir, err)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestPauseDiskTierUnsupported: under crun the disk tier is refused with a
// message, and a paused sandbox says it is in the memory tier.
func TestPauseDiskTierUnsupported(t *testing.T) {
	srv := StartServer(t, "--pool", "base=0", "--pool", "code-interpreter=0")
	c := srv.Client(t)
	s := create(t, c, sdk.CreateOptions{})
	r := pauseTo(t, srv, s.ID, "disk")
	if r.Status != http.StatusPreconditionFailed {
		t.Fatalf("pause?tier=disk under crun = %d %s; want 412", r.Status, r.Body)
	}
	if msg := errorBody(t, r); !strings.Contains(msg, "runsc") {
		t.Errorf("412 message %q does not say which runtime can", msg)
	}
	if r := pauseTo(t, srv, s.ID, "tape"); r.Status != http.StatusBadRequest {
		t.Errorf("pause?tier=tape = %d %s; want 400", r.Status, r.Body)
	}
	if r := pauseTo(t, srv, s.ID, "memory"); r.Status != http.StatusNoContent {
		t.Fatalf("pause?tier=memory = %d %s", r.Status, r.Body)
	}
	if st, tier := pauseTier(t, srv, s.ID); st != "paused" || tier != "memory" {
		t.Errorf("state %q tier %q; want paused, memory", st, tier)
	}
}

// TestPauseDiskAtShutdown: with the disk tier on, a graceful stop moves
// frozen sandboxes to disk, and the next server restores them.
func TestPauseDiskAtShutdown(t *testing.T) {
	requireRunsc(t, "the disk tier of pause")
	srv := StartServer(t, "--runtime", "runsc", runscPlatform, "--pool", "base=0", "--pool", "code-interpreter=0", "--pause-disk-after", "1h")
	c := srv.Client(t)
	s := create(t, c, sdk.CreateOptions{})
	h, err := s.Commands.Start(opCtx(t), counterLoop, sdk.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h.Disconnect()
	before := waitCounterAbove(t, s, 3)
	if err := s.Pause(opCtx(t)); err != nil {
		t.Fatal(err)
	}
	if _, tier := pauseTier(t, srv, s.ID); tier != "memory" {
		t.Fatalf("tier before shutdown = %q; want memory", tier)
	}
	srv.Stop(syscall.SIGTERM)
	srv.Start(t)
	if st, tier := pauseTier(t, srv, s.ID); st != "paused" || tier != "disk" {
		t.Fatalf("after a graceful restart: state %q tier %q; want paused, disk", st, tier)
	}
	r, err := c.Connect(opCtx(t), s.ID, sdk.ConnectOptions{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	waitCounterAbove(t, r, before)
}

// TestPauseLatency measures pause and resume through the API for both
// tiers with a Python process holding 50 MB, and checks the process and
// its memory survive every cycle. It logs p50/p90 (never asserts times;
// run with -v to see them).
func TestPauseLatency(t *testing.T) {
	requireRunsc(t, "the disk tier of pause")
	srv := StartServer(t, "--runtime", "runsc", runscPlatform, "--pool", "base=0", "--pool", "code-interpreter=0")
	c := srv.Client(t)
	s := create(t, c, sdk.CreateOptions{Timeout: 10 * time.Minute})
	hold := `python3 -c "import time; b=bytearray(50<<20); b[::4096]=b'x'*len(b[::4096]); open('/tmp/held','w').write('ok'); time.sleep(1e6)"`
	h, err := s.Commands.Start(opCtx(t), hold, sdk.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h.Disconnect()
	for run(t, s, "cat /tmp/held 2>/dev/null || true", sdk.RunOptions{}).Stdout != "ok" {
		time.Sleep(50 * time.Millisecond)
	}
	key := map[string]string{"X-API-Key": srv.APIKey}
	timed := func(method, path, body string, want int) time.Duration {
		t0 := time.Now()
		r := srv.Raw(t, method, path, body, key)
		d := time.Since(t0)
		if r.Status != want {
			t.Fatalf("%s %s = %d %s; want %d", method, path, r.Status, r.Body, want)
		}
		return d
	}
	for _, tier := range []string{"memory", "disk"} {
		var pauses, resumes []float64
		for range 20 {
			pauses = append(pauses, float64(timed(http.MethodPost, "/sandboxes/"+s.ID+"/pause?tier="+tier, "", http.StatusNoContent).Microseconds())/1000)
			resumes = append(resumes, float64(timed(http.MethodPost, "/v2/sandboxes/"+s.ID+"/connect", `{"timeout":300}`, http.StatusCreated).Microseconds())/1000)
		}
		slices.Sort(pauses)
		slices.Sort(resumes)
		t.Logf("%s tier: pause p50 %.2f ms p90 %.2f ms; resume p50 %.2f ms p90 %.2f ms (20 cycles, 50 MB held)",
			tier, pauses[10], pauses[18], resumes[10], resumes[18])
	}
	rss := run(t, s, "grep VmRSS /proc/$(pgrep -f bytearray | head -1)/status", sdk.RunOptions{}).Stdout
	var kb int
	if _, err := fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(rss, "VmRSS:")), "%d", &kb); err != nil || kb < 50<<10 {
		t.Errorf("the Python process after 40 cycles: %q; want it alive holding ≥ 50 MB", rss)
	}
}

// TestPauseDiskAfterUpgrade: a server restarted with a different envd
// replaces /.sbx/bin/envd under running sandboxes, which gVisor cannot
// checkpoint; the disk tier must refuse (412) instead of losing the
// sandbox, and the sandbox keeps working in the memory tier.
func TestPauseDiskAfterUpgrade(t *testing.T) {
	requireRunsc(t, "the disk tier of pause")
	srv := StartServer(t, "--runtime", "runsc", runscPlatform, "--pool", "base=0", "--pool", "code-interpreter=0")
	// Run from a private copy of the binaries so the "upgrade" touches
	// nothing else.
	bin := t.TempDir()
	for _, name := range []string{"sbx", "envd", "codeinterp"} {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(srv.Bin), name))
		if err != nil {
			if name == "codeinterp" {
				continue
			}
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bin, name), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	srv.Stop(syscall.SIGTERM)
	srv.Bin = filepath.Join(bin, "sbx")
	srv.Start(t)
	c := srv.Client(t)
	s := create(t, c, sdk.CreateOptions{})
	if _, err := s.Files.Write(opCtx(t), "kept.txt", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	srv.Stop(syscall.SIGTERM)
	// A different envd: trailing bytes change the file, not the program.
	f, err := os.OpenFile(filepath.Join(bin, "envd"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("upgrade")
	f.Close()
	srv.Start(t)

	r := pauseTo(t, srv, s.ID, "disk")
	if r.Status != http.StatusPreconditionFailed {
		t.Fatalf("pause?tier=disk after an agent upgrade = %d %s; want 412", r.Status, r.Body)
	}
	if msg := errorBody(t, r); !strings.Contains(msg, "replaced") {
		t.Errorf("412 message %q does not say why", msg)
	}
	if st, tier := pauseTier(t, srv, s.ID); st != "paused" || tier != "memory" {
		t.Errorf("after the refused disk pause: state %q tier %q; want paused, memory", st, tier)
	}
	s2, err := c.Connect(opCtx(t), s.ID, sdk.ConnectOptions{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if res := run(t, s2, "cat kept.txt", sdk.RunOptions{}); res.Stdout != "kept" {
		t.Errorf("file after resume = %q", res.Stdout)
	}
}

// TestPauseDiskWithTenantSocket: a process in the sandbox listening on a
// unix socket in its (host-backed) filesystem makes gVisor refuse to save
// it ("Cannot save endpoint with bound host socket"). The pause to disk
// must say why (not 500), and the sandbox must stay usable: it stays
// paused in memory, and envd, which had let go of its own socket for the
// save, listens again (before, it stayed deaf and the sandbox was lost to
// its clients).
func TestPauseDiskWithTenantSocket(t *testing.T) {
	requireRunsc(t, "the disk tier of pause")
	srv := StartServer(t, "--runtime", "runsc", runscPlatform, "--pool", "base=0", "--pool", "code-interpreter=0")
	c := srv.Client(t)
	s := create(t, c, sdk.CreateOptions{Timeout: 10 * time.Minute})
	listen := `python3 -c "import socket,time; s=socket.socket(socket.AF_UNIX); s.bind('/home/user/app.sock'); s.listen(); open('/home/user/listening','w').write('ok'); time.sleep(1e6)"`
	h, err := s.Commands.Start(opCtx(t), listen, sdk.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h.Disconnect()
	for run(t, s, "cat /home/user/listening 2>/dev/null || true", sdk.RunOptions{}).Stdout != "ok" {
		time.Sleep(50 * time.Millisecond)
	}
	r := pauseTo(t, srv, s.ID, "disk")
	if r.Status != http.StatusPreconditionFailed || !strings.Contains(r.Body, "unix socket") {
		t.Fatalf("pause?tier=disk with a tenant's listening socket = %d %s; want 412 saying why", r.Status, r.Body)
	}
	if st, tier := pauseTier(t, srv, s.ID); st != "paused" || tier != "memory" {
		t.Fatalf("after the refused save: state %q tier %q; want paused, memory", st, tier)
	}
	if _, err := c.Connect(opCtx(t), s.ID, sdk.ConnectOptions{Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if out := run(t, s, "echo alive", sdk.RunOptions{}).Stdout; strings.TrimSpace(out) != "alive" {
		t.Errorf("a command after the refused save: %q; want alive", out)
	}
}
