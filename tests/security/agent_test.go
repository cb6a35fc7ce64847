package security

// Attacks on the agent channel (issue 12, items 3 and 18): the host dir
// mounted read-write at /.sbx/run in every sandbox, envd's /init on its
// unix socket, the per-sandbox agent key, and the frames the host reads
// from envd.

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/testenv"
	"github.com/sbxdev/sbx/sdk"
	"github.com/sbxdev/sbx/tests/harness"
)

// A sandbox of team A plants `access-token -> <host file>` and
// `envd.sock -> <team B's envd socket>` in its run dir from its template's
// start command, so that its pooled sandboxes carry the links to the
// claim, where the host used to write the token through the first link and
// send /init through the second (into B's envd, which took it: B's token
// replaced by A's, A's commands running in B).
//
// Under "runsc-snapshot" the template is snapshotted under runsc while its
// start command sleeps, so the pooled sandbox is a clone restored from the
// snapshot that plants the links after its restore.
func TestAgentPlantedRunDirLinks(t *testing.T) {
	variants := agentRuntimes(t)
	for i := range variants {
		variants[i].flags = append(variants[i].flags, "--snapshot-runtime", "none")
	}
	if len(variants) > 1 {
		variants = append(variants, agentRuntime{name: "runsc-snapshot", snapshot: true})
	}
	for _, rt := range variants {
		t.Run(rt.name, func(t *testing.T) {
			srv := startServer(t, append(rt.flags, "--pool", "base=0", "--pool", "code-interpreter=0", "--pool", "*=1:1")...)
			victim := srv.ClientWithKey(t, srv.CreateTeam(t, "victim"))
			b := create(t, victim, sdk.CreateOptions{})
			if b.EnvdAccessToken == "" {
				t.Fatal("team B's sandbox has no access token: the test needs one to prove anything")
			}
			hostFile := filepath.Join(t.TempDir(), "host-file")
			const original = "host content the sandbox must not change\n"
			if err := os.WriteFile(hostFile, []byte(original), 0o644); err != nil {
				t.Fatal(err)
			}
			bSock := filepath.Join(srv.DataDir, "run", b.ID, "envd.sock")
			// kill -USR1 1 makes envd let go of its host socket (and cut the
			// host's kept-alive connections), as before a checkpoint; the links
			// then replace the socket and the token file.
			// The template's user is root (sudo does not work under runsc).
			delay, build := 1, []string{"--no-snapshot"}
			if rt.snapshot {
				// Long enough for the snapshot to be taken first.
				delay, build = 8, []string{"--ready-cmd", "true"}
			}
			// The build's own check of the start command (a build sandbox,
			// hostname sbx-build) must see it keep running, so the planter
			// only waits there, as an attacker's would; afterwards it stays
			// up as a start command must.
			plant := fmt.Sprintf(`[ "$(hostname)" = sbx-build ] && exec sleep 3600; sleep %d; kill -USR1 1; sleep 1; ln -sfn %s /.sbx/run/access-token; ln -sfn %s /.sbx/run/envd.sock; exec sleep 3600`,
				delay, hostFile, bSock)
			agentBuildTemplate(t, srv, "planter", "FROM base\nUSER root\n", append(build, "-c", plant)...)
			if rt.snapshot && !strings.Contains(srv.Log(), "template snapshot taken") {
				t.Fatal("the template was not snapshotted: the test proves nothing for clones")
			}

			a := srv.Client(t)
			a1 := create(t, a, sdk.CreateOptions{Template: "planter"}) // starts the template's pool
			waitPlanted(t, srv, bSock, a1.ID)
			claims := func() int {
				return strings.Count(srv.Log(), "pooled=true") + strings.Count(srv.Log(), "pooled sandbox unusable")
			}
			before := claims()
			a2, err := a.Create(opCtx(t), sdk.CreateOptions{Template: "planter"})
			if err == nil {
				t.Cleanup(func() { _ = a2.Kill(context.Background()) })
			}
			for deadline := time.Now().Add(5 * time.Second); claims() == before && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond) // the log arrives through a pipe
			}
			if claims() == before {
				t.Fatal("the second create did not claim a pooled sandbox: the test proves nothing")
			}

			if got, _ := os.ReadFile(hostFile); string(got) != original {
				t.Errorf("the host file behind the planted access-token link was overwritten: %q", got)
			}
			if out, err := b.Commands.Run(opCtx(t), "echo still-mine", sdk.RunOptions{}); err != nil || strings.TrimSpace(out.Stdout) != "still-mine" {
				t.Errorf("team B's own token no longer works on B's sandbox (its token was replaced): %v", err)
			}
			if err != nil {
				t.Logf("create from the planting template failed (acceptable): %v", err)
				return
			}
			if st := envdStatus(t, srv, b.ID, a2.EnvdAccessToken); st != http.StatusUnauthorized {
				t.Errorf("B's envd answers %d to A's access token, want 401: A's token was planted in B", st)
			}
			res, rerr := a2.Commands.Run(opCtx(t), "hostname", sdk.RunOptions{})
			if rerr != nil {
				t.Logf("A's new sandbox is unreachable after planting its links (acceptable: it hurt only itself): %v", rerr)
				return
			}
			if got, want := strings.TrimSpace(res.Stdout), "sbx-"+a2.ID[:8]; got != want {
				t.Errorf("a command in A's new sandbox %s ran on host %q, want %q (B is sbx-%s)", a2.ID, got, want, b.ID[:8])
			}
		})
	}
}

// Code in a sandbox (as root) cannot re-initialise envd: /init without the
// host's proof is refused on the socket and on the TCP port, also with a
// forged proof, and the sandbox's token stays.
func TestAgentInitNeedsProof(t *testing.T) {
	for _, rt := range agentRuntimes(t) {
		t.Run(rt.name, func(t *testing.T) {
			srv := startServer(t, append(rt.flags, "--pool", "base=0", "--pool", "code-interpreter=0")...)
			c := srv.Client(t)
			s := create(t, c, sdk.CreateOptions{})

			for _, where := range []struct{ name, curl string }{
				{"socket", "curl -s -o /dev/null -w '%{http_code}' --unix-socket /.sbx/run/envd.sock"},
				{"tcp", "curl -s -o /dev/null -w '%{http_code}' -H 'X-Access-Token: " + s.EnvdAccessToken + "'"},
			} {
				for _, forged := range []string{"", " -H 'X-Sbx-Agent-Proof: " + randHex(t, 32) + "' -H 'X-Sbx-Agent-Nonce: " + randHex(t, 16) + "' -H 'X-Sbx-Agent-Id: " + s.ID + "'"} {
					cmd := where.curl + forged + ` -X POST -H 'Content-Type: application/json' -d '{"accessToken":"pwned"}' http://127.0.0.1:49983/init`
					code := strings.TrimSpace(mustSh(t, s, "root", cmd))
					if code != "401" && code != "403" {
						t.Errorf("POST /init from inside on the %s (forged proof: %v) answered %s, want 401 or 403", where.name, forged != "", code)
					}
				}
			}
			if st := envdStatus(t, srv, s.ID, "pwned"); st != http.StatusUnauthorized {
				t.Errorf("envd accepts the token planted from inside (status %d)", st)
			}
			if got := strings.TrimSpace(mustSh(t, s, "", "echo ok")); got != "ok" {
				t.Errorf("the sandbox's own token stopped working: %q", got)
			}
		})
	}
}

// Code in a sandbox, as user and as root, cannot read the sandbox's agent
// key: not in the environ, cmdline, memory or descriptors of any process.
func TestAgentKeyUnreadable(t *testing.T) {
	for _, rt := range agentRuntimes(t) {
		t.Run(rt.name, func(t *testing.T) {
			srv := startServer(t, append(rt.flags, "--pool", "base=0", "--pool", "code-interpreter=0")...)
			s := create(t, srv.Client(t), sdk.CreateOptions{})
			key := agentKeyOf(t, srv, s.ID)
			// The scan gets the key masked, or its own shell's cmdline
			// would hold it.
			masked, _ := hex.DecodeString(key)
			for i := range masked {
				masked[i] ^= 0x5a
			}
			for _, user := range []string{"user", "root"} {
				out := sh(t, s, user, "python3 - "+hex.EncodeToString(masked)+" <<'EOF'\n"+agentKeyScan+"EOF")
				if out.ExitCode != 0 {
					t.Fatalf("key scan as %s failed: %s\n%s", user, out.Stderr, out.Stdout)
				}
				if strings.Contains(out.Stdout, "FOUND") {
					t.Errorf("code in the sandbox as %s reads the agent key:\n%s", user, out.Stdout)
				}
				if !strings.Contains(out.Stdout, "environs ") || strings.Contains(out.Stdout, "environs 0 ") {
					t.Errorf("key scan as %s read no environ at all, so it proves nothing:\n%s", user, out.Stdout)
				}
				// gVisor lets no process read another's memory; crun must
				// let the scan read its own shell's, or it proves nothing.
				if rt.name == "crun" && strings.Contains(out.Stdout, "regions 0 ") {
					t.Errorf("key scan as %s read no process memory at all, so it proves nothing:\n%s", user, out.Stdout)
				}
				t.Logf("key scan as %s: %s", user, strings.TrimSpace(out.Stdout))
			}
		})
	}
}

// agentKeyScan looks for the key (argv[1], hex, each byte XOR 0x5a) in
// every other process's environ, cmdline, memory and pipe or file
// descriptors it can open. It prints FOUND lines and how many environs
// and memory regions it could read (its own shell's are readable, so 0
// means the scan itself is broken).
const agentKeyScan = `import os, sys
raw = bytes(b ^ 0x5a for b in bytes.fromhex(sys.argv[1]))
hexkey = raw.hex().encode()
me = os.getpid()
found, regions, environs, denied = [], 0, 0, []
def has(d):
    return hexkey in d or raw in d or hexkey.upper() in d
for pid in sorted(p for p in os.listdir('/proc') if p.isdigit()):
    if int(pid) == me:
        continue
    for f in ('environ', 'cmdline'):
        try:
            with open('/proc/%s/%s' % (pid, f), 'rb') as fh:
                d = fh.read()
            if f == 'environ':
                environs += 1
            if has(d):
                found.append('%s/%s' % (pid, f))
        except OSError:
            pass
    try:
        for fd in os.listdir('/proc/%s/fd' % pid):
            p = '/proc/%s/fd/%s' % (pid, fd)
            try:
                if not os.readlink(p).startswith(('pipe:', '/')):
                    continue
                n = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
                try:
                    if has(os.read(n, 1 << 16)):
                        found.append('%s/fd/%s' % (pid, fd))
                finally:
                    os.close(n)
            except OSError:
                pass
    except OSError:
        pass
    try:
        maps = open('/proc/%s/maps' % pid).read().splitlines()
        mem = open('/proc/%s/mem' % pid, 'rb', 0)
    except OSError:
        denied.append(pid)
        continue
    for line in maps:
        lo, hi = (int(x, 16) for x in line.split()[0].split('-'))
        if hi - lo > 512 << 20:
            continue
        try:
            mem.seek(lo)
            d = mem.read(hi - lo)
        except (OSError, ValueError, OverflowError):
            continue
        regions += 1
        if d and has(d):
            found.append('%s/mem' % pid)
            break
for f in found:
    print('FOUND', f)
print('environs %d regions %d ; memory of pids %s denied' % (environs, regions, ' '.join(denied)))
`

// hostileAgent replaces envd's socket with a server that answers every
// request with a Connect stream whose first frame announces 4 GiB, then
// sends megabytes of it.
const hostileAgent = `import os, socket, threading, time
p = '/.sbx/run/envd.sock'
for _ in range(200):
    if not os.path.exists(p):
        break
    time.sleep(0.01)
try:
    os.unlink(p)
except FileNotFoundError:
    pass
s = socket.socket(socket.AF_UNIX)
s.bind(p)
os.chmod(p, 0o777)
s.listen(64)
chunk = b'A' * (1 << 20)
def serve(c):
    try:
        c.settimeout(30)
        buf = b''
        while b'\r\n\r\n' not in buf:
            d = c.recv(65536)
            if not d:
                return
            buf += d
        c.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/connect+json\r\nConnection: close\r\n\r\n\x00\xff\xff\xff\xff')
        for _ in range(96):
            c.sendall(chunk)
    except Exception:
        pass
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`

// A start command (as root) takes envd's socket over with a server that
// announces a 4 GiB frame; the host's ready check then reads from it. The
// host must fail that create cleanly without allocating what the frame
// announces, and keep serving.
func TestAgentHostileFrameLength(t *testing.T) {
	srv := startServer(t, "--snapshot-runtime", "none", "--pool", "base=0", "--pool", "code-interpreter=0")
	agentBuildTemplate(t, srv, "hostile", "FROM base\nUSER root\nCOPY hostile.py /opt/hostile.py\n",
		"--no-snapshot", "-c", "kill -USR1 1; exec python3 /opt/hostile.py", "--ready-cmd", `test -z "$NOT_READY"`)
	c := srv.Client(t)
	hwm0 := serverHWM(t, srv)
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	// The build checked the start command with a ready command that passed
	// at once; this sandbox is never ready, so the host polls until it
	// meets the hostile server.
	s, err := c.Create(ctx, sdk.CreateOptions{Template: "hostile", EnvVars: map[string]string{"NOT_READY": "1"}})
	if err == nil {
		_ = s.Kill(context.Background())
		t.Errorf("create from a template whose agent sends a 4 GiB frame succeeded")
	} else if !strings.Contains(err.Error(), "broke the protocol") {
		t.Errorf("the create failed without saying why: %v", err)
	}
	took := time.Since(t0)
	grew := serverHWM(t, srv) - hwm0
	t.Logf("create failed after %v (%v); server peak RSS grew by %d MiB", took.Round(time.Millisecond), err, grew>>20)
	if grew > 48<<20 {
		t.Errorf("the server's peak memory grew by %d MiB reading one hostile frame", grew>>20)
	}
	if took > 30*time.Second {
		t.Errorf("the create took %v to fail: a frame over the limit must end it at once, not after retries", took)
	}
	if !strings.Contains(srv.Log(), "exceeds") {
		t.Errorf("the server log does not say which frame limit the agent exceeded")
	}
	ok := create(t, c, sdk.CreateOptions{})
	if got := strings.TrimSpace(mustSh(t, ok, "", "echo alive")); got != "alive" {
		t.Errorf("the server stopped serving after the hostile agent: %q", got)
	}
}

type agentRuntime struct {
	name     string
	flags    []string
	snapshot bool // sandboxes of the attacking template are snapshot clones
}

// agentRuntimes are the runtimes the agent attacks run under: crun always,
// runsc when it is installed.
func agentRuntimes(t *testing.T) []agentRuntime {
	rts := []agentRuntime{{name: "crun"}}
	if _, err := exec.LookPath("runsc"); err == nil {
		rts = append(rts, agentRuntime{name: "runsc", flags: []string{"--runtime", "runsc"}})
	} else if testenv.Strict() {
		t.Fatalf("runsc is not installed: the agent attacks must also run under runsc (SBX_REQUIRE_INTEGRATION=1)")
	}
	return rts
}

// agentBuildTemplate builds a template named name from a Dockerfile (plus
// hostile.py) with `sbx template build` as the first team.
func agentBuildTemplate(t *testing.T, srv *harness.Server, name, dockerfile string, args ...string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "e2b.Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hostile.py"), []byte(hostileAgent), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), srv.Bin, append([]string{"template", "build", "--name", name, "--path", dir}, args...)...)
	cmd.Env = append(os.Environ(), "E2B_API_URL="+srv.URL, "E2B_API_KEY="+srv.APIKey, "E2B_SANDBOX_URL="+srv.URL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("template build %s: %v\n%s", name, err, out)
	}
}

// waitPlanted waits until a pooled sandbox (any run dir but those of
// skip) has replaced its envd.sock with a link to target.
func waitPlanted(t *testing.T, srv *harness.Server, target string, skip ...string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		dirs, _ := filepath.Glob(filepath.Join(srv.DataDir, "run", "*"))
		for _, d := range dirs {
			if slices.Contains(skip, filepath.Base(d)) {
				continue
			}
			if l, err := os.Readlink(filepath.Join(d, "envd.sock")); err == nil && l == target {
				if _, err := os.Lstat(filepath.Join(d, "access-token")); err == nil {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pooled sandbox planted its links within a minute (run dirs: %v)", dirs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// envdStatus is the status of GET /envs on a sandbox's envd through the
// proxy with the given access token.
func envdStatus(t *testing.T, srv *harness.Server, id, token string) int {
	t.Helper()
	return srv.Raw(t, http.MethodGet, "/envs", "", map[string]string{
		"E2b-Sandbox-Id": id, "E2b-Sandbox-Port": "49983", "X-Access-Token": token}).Status
}

// agentKeyOf reads the sandbox's agent key from its OCI bundle, where the
// host hands it to the init process.
func agentKeyOf(t *testing.T, srv *harness.Server, id string) string {
	t.Helper()
	for _, dir := range []string{"sandboxes", "sandboxes-runsc"} {
		b, err := os.ReadFile(filepath.Join(srv.DataDir, dir, id, "config.json"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		for _, kv := range strings.Split(string(b), `"`) {
			if k, ok := strings.CutPrefix(kv, "SBX_AGENT_KEY="); ok {
				return k
			}
		}
		t.Fatalf("sandbox %s: no SBX_AGENT_KEY in its init's environment (config.json): the agent has no key", id)
	}
	t.Fatalf("sandbox %s: no OCI bundle found under %s", id, srv.DataDir)
	return ""
}

// serverHWM is the peak resident memory of the server process.
func serverHWM(t *testing.T, srv *harness.Server) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", srv.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in the server's /proc status")
	return 0
}
