package security

// Attacks on the runtime boundary (issue 12, items 10 and 11): a sandbox
// whose init dies must be recorded and freed at once, the kernel surface a
// sandbox reaches is Docker's default seccomp profile or less, and root in a
// sandbox is not root on the host.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/testenv"
	"github.com/sbxdev/sbx/sdk"
	"github.com/sbxdev/sbx/tests/harness"
)

// exitNoticed bounds how long the server may take to notice a dead sandbox:
// "within seconds", with room for a loaded CI machine.
const exitNoticed = 20 * time.Second

// eventSink is a webhook receiver on loopback that keeps every delivery.
type eventSink struct {
	srv *httptest.Server
	mu  sync.Mutex
	evs []map[string]any
}

func newEventSink(t *testing.T) *eventSink {
	t.Helper()
	s := &eventSink{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ev map[string]any
		if json.Unmarshal(body, &ev) == nil {
			s.mu.Lock()
			s.evs = append(s.evs, ev)
			s.mu.Unlock()
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// register subscribes the sink to killed events of the server's first team.
func (s *eventSink) register(t *testing.T, srv *harness.Server) {
	t.Helper()
	body := fmt.Sprintf(`{"name":"runtime-redteam","url":%q,"events":["sandbox.lifecycle.killed"],"signatureSecret":"runtime-redteam-secret"}`, s.srv.URL)
	resp := srv.Raw(t, "POST", "/events/webhooks", body, map[string]string{"X-API-Key": srv.APIKey})
	if resp.Status != http.StatusCreated {
		t.Fatalf("POST /events/webhooks: %d %s", resp.Status, resp.Body)
	}
}

// killed waits for a delivered killed event of sandbox id and returns its eventData.
func (s *eventSink) killed(t *testing.T, id string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(exitNoticed + 30*time.Second) // deliveries are asynchronous
	for {
		s.mu.Lock()
		for _, ev := range s.evs {
			if ev["sandboxId"] == id && ev["type"] == "sandbox.lifecycle.killed" {
				s.mu.Unlock()
				data, _ := ev["eventData"].(map[string]any)
				return data
			}
		}
		n := len(s.evs)
		s.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no killed event for sandbox %s was delivered to the webhook (%d deliveries)", id, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitRecordedKilled polls GET /sandboxes/{id} until the server no longer
// reports the sandbox running, and checks it says killed with reason.
func waitRecordedKilled(t *testing.T, srv *harness.Server, id, reason string) {
	t.Helper()
	deadline := time.Now().Add(exitNoticed)
	for {
		resp := srv.Raw(t, "GET", "/sandboxes/"+id, "", map[string]string{"X-API-Key": srv.APIKey})
		if resp.Status == http.StatusNotFound {
			if !strings.Contains(resp.Body, "killed") || !strings.Contains(resp.Body, reason) {
				t.Errorf("GET /sandboxes/%s = 404 %s; want it to say killed (%s)", id, resp.Body, reason)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox %s whose init died is still reported %d %s after %v; want killed (%s)",
				id, resp.Status, resp.Body, exitNoticed, reason)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// eventReason returns the kill_reason of the sandbox's killed event from
// GET /events/sandboxes/{id}, "" if there is none.
func eventReason(t *testing.T, srv *harness.Server, id string) map[string]any {
	t.Helper()
	resp := srv.Raw(t, "GET", "/events/sandboxes/"+id, "", map[string]string{"X-API-Key": srv.APIKey})
	var evs []map[string]any
	if err := json.Unmarshal([]byte(resp.Body), &evs); err != nil {
		t.Fatalf("GET /events/sandboxes/%s: %d %s", id, resp.Status, resp.Body)
	}
	for _, ev := range evs {
		if ev["type"] == "sandbox.lifecycle.killed" {
			data, _ := ev["eventData"].(map[string]any)
			return data
		}
	}
	return nil
}

// requireFreed checks that nothing of the sandbox is left on the host: no
// container, no memory cgroup (whose tmpfs pages would stay charged), no
// run dir.
func requireFreed(t *testing.T, srv *harness.Server, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []string
		if slices.Contains(srv.CrunContainers(t), id) {
			left = append(left, "crun container")
		}
		for _, p := range []string{"/sys/fs/cgroup/memory/sbx/" + id, filepath.Join(srv.DataDir, "run", id),
			filepath.Join(srv.DataDir, "sandboxes", id)} {
			if _, err := os.Stat(p); err == nil {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox %s was recorded killed but still holds %v", id, left)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A sandbox fills its disk, a tmpfs charged to its memory cgroup, until the
// OOM killer takes its init. The server must notice within seconds, record
// it killed with reason oom, tell the team's webhook, and free it.
func TestRuntimeDiskFillOOMIsRecorded(t *testing.T) {
	srv := startServer(t, "--webhook-allow-private")
	sink := newEventSink(t)
	sink.register(t, srv)
	s := create(t, srv.Client(t), sdk.CreateOptions{Timeout: 10 * time.Minute})
	// Larger than the sandbox's memory (512 MiB), smaller than its disk (2 GiB).
	h, err := s.Commands.Start(opCtx(t), "dd if=/dev/zero of=$HOME/fill bs=1M count=1900", sdk.RunOptions{})
	if err != nil {
		t.Fatalf("start the disk filler: %v", err)
	}
	defer h.Disconnect()
	waitRecordedKilled(t, srv, s.ID, "oom")
	if data := eventReason(t, srv, s.ID); data == nil || data["kill_reason"] != "oom" {
		t.Errorf("killed event of %s: %v; want kill_reason oom", s.ID, data)
	}
	if data := sink.killed(t, s.ID); data["kill_reason"] != "oom" {
		t.Errorf("webhook killed event of %s carries %v; want kill_reason oom", s.ID, data)
	}
	requireFreed(t, srv, s.ID)
}

// Root in a sandbox stops the agent, which is its init: the sandbox ends
// with it. The server must record the sandbox killed (reason exited), not
// keep routing to it until its timeout.
func TestRuntimeInitExitIsRecorded(t *testing.T) {
	srv := startServer(t, "--webhook-allow-private")
	sink := newEventSink(t)
	sink.register(t, srv)
	s := create(t, srv.Client(t), sdk.CreateOptions{Timeout: 10 * time.Minute})
	// envd serves from the init itself (one process, PID 1). SIGKILL from
	// inside cannot touch a namespace's init, but root in the sandbox can
	// make it stop: SIGTERM, which envd as init handles by shutting down.
	// Its exit ends the sandbox, which must be recorded, not left listed.
	killer := `sleep 0.5; kill -TERM 1`
	h, err := s.Commands.Start(opCtx(t), "nohup sh -c '"+killer+"' >/dev/null 2>&1 &", sdk.RunOptions{User: "root"})
	if err != nil {
		t.Fatalf("start the killer: %v", err)
	}
	defer h.Disconnect()
	waitRecordedKilled(t, srv, s.ID, "exited")
	data := sink.killed(t, s.ID)
	if data["kill_reason"] != "exited" {
		t.Errorf("webhook killed event of %s carries %v; want kill_reason exited", s.ID, data)
	}
	requireFreed(t, srv, s.ID)
}

// The kernel surfaces Docker's default profile closes stay closed to root
// in a sandbox: io_uring, vsock (host/VM sockets), and personality flags
// that turn off ASLR or make data executable.
func TestRuntimeSeccompClosesKernelSurfaces(t *testing.T) {
	srv := startServer(t)
	s := create(t, srv.Client(t), sdk.CreateOptions{})
	script := `
import ctypes, json, socket
libc = ctypes.CDLL(None, use_errno=True)
out = {}
def call(name, fn):
    ctypes.set_errno(0)
    r = fn()
    out[name] = "ok" if r >= 0 else "errno %d" % ctypes.get_errno()
params = ctypes.create_string_buffer(120)
call("io_uring_setup", lambda: libc.syscall(425, 8, params))
call("personality(0xffffffff)", lambda: libc.personality(0xffffffff))
call("personality(ADDR_NO_RANDOMIZE)", lambda: libc.personality(0x0040000))
call("personality(READ_IMPLIES_EXEC)", lambda: libc.personality(0x0400000))
try:
    socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
    out["socket(AF_VSOCK)"] = "ok"
except OSError as e:
    out["socket(AF_VSOCK)"] = "errno %d" % e.errno
print(json.dumps(out))
`
	stdout := mustSh(t, s, "root", "python3 -c '"+script+"'")
	var got map[string]string
	if err := json.Unmarshal([]byte(strings.TrimSpace(stdout)), &got); err != nil {
		t.Fatalf("probe printed %q: %v", stdout, err)
	}
	for _, name := range []string{"io_uring_setup", "socket(AF_VSOCK)", "personality(0xffffffff)",
		"personality(ADDR_NO_RANDOMIZE)", "personality(READ_IMPLIES_EXEC)"} {
		if r, ok := got[name]; !ok || r == "ok" {
			t.Errorf("%s as root in a sandbox: %q; want it refused", name, r)
		}
	}
}

// Root in a sandbox is an unprivileged user on the host: a process it
// starts shows a non-zero uid in the host's /proc, and the sandbox's uid map
// is not the identity.
func TestRuntimeRootIsNotHostRoot(t *testing.T) {
	srv := startServer(t)
	s := create(t, srv.Client(t), sdk.CreateOptions{})
	marker := strconv.Itoa(4000000 + int(time.Now().UnixNano()%1000000))
	h, err := s.Commands.Start(opCtx(t), "exec sleep "+marker, sdk.RunOptions{User: "root"})
	if err != nil {
		t.Fatalf("start a process as root: %v", err)
	}
	defer h.Disconnect()
	uid := hostUIDOf(t, "sleep\x00"+marker+"\x00")
	if uid == 0 {
		t.Errorf("root in sandbox %s runs as uid 0 on the host: a kernel escape lands as host root", s.ID)
	}
	uidMap := strings.Join(strings.Fields(mustSh(t, s, "root", "cat /proc/self/uid_map")), " ")
	if uidMap == "0 0 4294967295" || !strings.HasPrefix(uidMap, "0 ") {
		t.Errorf("uid_map inside = %q; want sandbox root mapped to an unprivileged host range", uidMap)
	}
	if id := strings.TrimSpace(mustSh(t, s, "root", "id -u")); id != "0" {
		t.Errorf("id -u as root inside = %q; want 0 (root in its own namespace)", id)
	}
}

// hostUIDOf finds the host process whose command line is cmdline and
// returns its real uid from /proc/<pid>/status.
func hostUIDOf(t *testing.T, cmdline string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			b, err := os.ReadFile(p)
			if err != nil || string(b) != cmdline {
				continue
			}
			status, err := os.ReadFile(filepath.Join(filepath.Dir(p), "status"))
			if err != nil {
				continue
			}
			for line := range strings.SplitSeq(string(status), "\n") {
				if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
					uid, _ := strconv.Atoi(f[1])
					return uid
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no host process runs %q", strings.ReplaceAll(cmdline, "\x00", " "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// What the boundary must not break: with no CAP_NET_RAW, Docker's seccomp
// profile and (crun, runc) a user namespace, the everyday tools of a
// sandbox keep working, as the default user and through sudo.
func TestRuntimeToolsStillWork(t *testing.T) {
	srv := startServer(t)
	s := create(t, srv.Client(t), sdk.CreateOptions{})
	checks := []struct{ name, user, cmd string }{
		{"sudo", "", "sudo -n id -u | grep -x 0"},
		{"sudo to another user", "", "sudo -n -u nobody id -un | grep -x nobody"},
		{"ping (ICMP datagram sockets)", "", "ping -c1 -W5 127.0.0.1"},
		{"python threads", "", `python3 -c 'import threading; t=[threading.Thread(target=sum, args=([1],)) for _ in range(8)]; [x.start() for x in t]; [x.join() for x in t]'`},
		{"node worker threads", "", `node -e 'const {Worker}=require("worker_threads"); new Worker("process.exit(0)", {eval: true}).on("exit", c => process.exit(c))'`},
		{"git", "", "cd $(mktemp -d) && git init -q && git -c user.email=a@b -c user.name=a commit -q --allow-empty -m x && git log --oneline | grep -q x"},
		{"pip", "", "pip3 --version"},
		{"apt-get as root", "root", "apt-get -s -o Debug::NoLocking=1 install --reinstall -y bash >/dev/null"},
		{"dpkg owns files as root", "root", "touch /usr/local/bin/x && chown user:user /usr/local/bin/x && stat -c %U /usr/local/bin/x | grep -x user"},
		{"a server on port 80 as root", "root", `python3 -c 'import socket; s=socket.socket(); s.bind(("0.0.0.0", 80)); s.listen()'`},
		{"edit /etc/hosts as root", "root", "echo '127.0.0.2 sbx-test' >> /etc/hosts && getent hosts sbx-test"},
	}
	for _, c := range checks {
		if res := sh(t, s, c.user, c.cmd); res.ExitCode != 0 {
			t.Errorf("%s: %q exited %d\nstdout: %s\nstderr: %s", c.name, c.cmd, res.ExitCode, res.Stdout, res.Stderr)
		}
	}
}

// runsc (gVisor) sandboxes keep working under the same profile: gVisor's
// errno action is always EPERM, so the clone3 → ENOSYS rule that sends
// glibc to clone on the host kernel must not reach it (every pthread_create
// would fail), and the surfaces stay closed.
func TestRuntimeRunscKeepsWorking(t *testing.T) {
	testenv.Require(t, testenv.Runsc)
	srv := startServer(t, "--runtime", "runsc")
	s := create(t, srv.Client(t), sdk.CreateOptions{})
	mustSh(t, s, "", `python3 -c 'import threading; t=[threading.Thread(target=sum, args=([1],)) for _ in range(8)]; [x.start() for x in t]; [x.join() for x in t]'`)
	mustSh(t, s, "", "sudo -n id -u | grep -x 0")
	mustSh(t, s, "", "ping -c1 -W5 127.0.0.1")
	out := mustSh(t, s, "root", `python3 -c '
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
print("io_uring_setup", libc.syscall(425, 8, params))
print("personality", libc.personality(0x0040000))
'`)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) != 2 || f[1] != "-1" {
			t.Errorf("under runsc, %q; want the call refused (-1)", line)
		}
	}
}
