package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/sdk"
)

// snapshotDockerfile's start command draws a random token when it starts,
// then takes a second to "load" before it serves the token and its PID. A
// sandbox that started the command itself would answer with a token of its
// own; sandboxes restored from the template's snapshot all answer with the
// token drawn once, at build time. The server starts a thread per request:
// glibc's thread creation must work under the snapshot runtime.
const snapshotDockerfile = `FROM base
RUN echo built > /opt/built.txt
CMD ["python3", "-c", "import secrets,time,os,http.server as h\ntok=secrets.token_hex(8)\ntime.sleep(1)\nclass H(h.BaseHTTPRequestHandler):\n  def do_GET(s):\n    s.send_response(200);s.end_headers();s.wfile.write(('%s %d' % (tok, os.getpid())).encode())\n  def log_message(s, *a): pass\nh.ThreadingHTTPServer(('0.0.0.0',8000),H).serve_forever()"]
`

// portGet fetches / on a sandbox port through the sbx proxy (header routing).
func portGet(t *testing.T, s *Server, id string, port int) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL+"/", nil)
	req.Header.Set("E2b-Sandbox-Id", id)
	req.Header.Set("E2b-Sandbox-Port", fmt.Sprint(port))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET port %d of %s: %v", port, id, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET port %d of %s: %s: %s", port, id, resp.Status, b)
	}
	return string(b)
}

// sandboxRuntime reads the sbx extension field runtime of GET /sandboxes/{id}.
func sandboxRuntime(t *testing.T, s *Server, id string) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL+"/sandboxes/"+id, nil)
	req.Header.Set("X-API-Key", s.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d struct{ Runtime string }
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatalf("GET /sandboxes/%s: %v", id, err)
	}
	return d.Runtime
}

// TestTemplateSnapshot builds a template whose start command is snapshotted
// at the end of the build, and checks that sandboxes are restored from it:
// the process is already running with the state it had at build time, while
// each sandbox has its own ID, hostname, address, files and token; an
// unchanged rebuild reuses the snapshot; a restarted server finds it again.
func TestTemplateSnapshot(t *testing.T) {
	requireRunsc(t, "template snapshots")
	s := StartServer(t)
	c := s.Client(t)
	dir := t.TempDir()
	writeContext(t, dir, map[string]string{"e2b.Dockerfile": snapshotDockerfile})
	ready := "--ready-cmd=curl -sf http://127.0.0.1:8000"
	out, err := templateCLI(t, s, dir, "build", "--name", "snap-app", ready)
	if err != nil {
		t.Fatalf("template build: %v\n%s", err, out)
	}
	if !strings.Contains(out, "snapshot: saved") {
		t.Fatalf("build took no snapshot of the started state:\n%s", out)
	}

	type seen struct{ token, host, addr, env string }
	probe := func(sb *sdk.Sandbox) seen {
		t.Helper()
		served := portGet(t, s, sb.ID, 8000)
		token, _, _ := strings.Cut(served, " ")
		got := runIn(t, sb, `hostname; ip -4 -o addr show eth0 | awk '{print $4}'; echo "$E2B_SANDBOX_ID"; cat /opt/built.txt; test -e /tmp/mine && echo foreign-file; touch /tmp/mine`)
		lines := strings.Split(strings.TrimSpace(got), "\n")
		if len(lines) != 4 || lines[3] != "built" {
			t.Fatalf("sandbox %s: unexpected probe output:\n%s", sb.ID, got)
		}
		return seen{token: token, host: lines[0], addr: lines[1], env: lines[2]}
	}
	create := func() *sdk.Sandbox {
		t.Helper()
		sb, err := c.Create(t.Context(), sdk.CreateOptions{Template: "snap-app"})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		t.Cleanup(func() { _ = sb.Kill(context.Background()) })
		return sb
	}
	var first seen
	hosts, addrs := map[string]bool{}, map[string]bool{}
	for i := range 3 {
		sb := create()
		got := probe(sb)
		if i == 0 {
			first = got
		}
		if got.token == "" || got.token != first.token {
			t.Errorf("sandbox %s serves token %q, first sandbox %q: the start command ran again instead of being restored", sb.ID, got.token, first.token)
		}
		if rt := sandboxRuntime(t, s, sb.ID); rt != "runsc" {
			t.Errorf("sandbox %s restored from a snapshot reports runtime %q, want runsc", sb.ID, rt)
		}
		if got.env != sb.ID {
			t.Errorf("sandbox %s sees E2B_SANDBOX_ID=%q", sb.ID, got.env)
		}
		if hosts[got.host] || addrs[got.addr] || got.addr == "" {
			t.Errorf("sandbox %s shares hostname %q or address %q with another clone", sb.ID, got.host, got.addr)
		}
		hosts[got.host], addrs[got.addr] = true, true
	}

	// Unchanged rebuild: the snapshot is reused, not taken again.
	out, err = templateCLI(t, s, dir, "build", "--name", "snap-app", ready)
	if err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	if !strings.Contains(out, "CACHED snapshot") || strings.Contains(out, "snapshot: saved") {
		t.Errorf("unchanged rebuild did not reuse the snapshot:\n%s", out)
	}

	// After a crash and restart the snapshot on disk still serves.
	s.Stop(syscall.SIGKILL)
	s.Start(t)
	if got := probe(create()); got.token != first.token {
		t.Errorf("after a restart sandboxes serve token %q, want the snapshot's %q", got.token, first.token)
	}

	// A snapshot gone under a built template (an upgrade changed its key,
	// pruning removed it) is taken again in the background on first use.
	s.Stop(syscall.SIGTERM)
	snaps := filepath.Join(s.DataDir, "snapshots")
	if err := os.RemoveAll(snaps); err != nil {
		t.Fatal(err)
	}
	s.Start(t)
	if got := probe(create()); got.token == first.token {
		t.Errorf("with its snapshot deleted a sandbox still serves the old snapshot's token")
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		// Not ".<key>-*": a snapshot being written there is not in use yet.
		m, _ := filepath.Glob(filepath.Join(snaps, "[0-9a-f]*", "state", "complete"))
		if len(m) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the missing snapshot was not taken again within 2 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
	a, b := probe(create()), probe(create())
	if a.token != b.token || a.token == first.token {
		t.Errorf("after the snapshot was taken again sandboxes serve %q and %q; want one new token", a.token, b.token)
	}
}

// TestTemplateSnapshotOff: with snapshots off for the server
// (--snapshot-runtime none) or for one template (--no-snapshot), the build
// says that sandboxes run the start command themselves, and each one does,
// under the server's runtime.
func TestTemplateSnapshotOff(t *testing.T) {
	for _, tc := range []struct {
		name          string
		server, build []string
		wantLog       string
	}{
		{"server", []string{"--snapshot-runtime", "none"}, nil, "snapshots are off on this server"},
		{"template", nil, []string{"--no-snapshot"}, "snapshots are off for this template"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := StartServer(t, tc.server...)
			c := s.Client(t)
			dir := t.TempDir()
			writeContext(t, dir, map[string]string{"e2b.Dockerfile": snapshotDockerfile})
			args := append([]string{"build", "--name", "cold-app", "--ready-cmd=curl -sf http://127.0.0.1:8000"}, tc.build...)
			out, err := templateCLI(t, s, dir, args...)
			if err != nil {
				t.Fatalf("template build: %v\n%s", err, out)
			}
			if !strings.Contains(out, tc.wantLog) || !strings.Contains(out, "run the start command when they start") {
				t.Errorf("build log does not say %q and that start commands run at sandbox start:\n%s", tc.wantLog, out)
			}
			tokens := map[string]bool{}
			for range 2 {
				sb, err := c.Create(t.Context(), sdk.CreateOptions{Template: "cold-app"})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = sb.Kill(context.Background()) })
				token, _, _ := strings.Cut(portGet(t, s, sb.ID, 8000), " ")
				tokens[token] = true
				if rt := sandboxRuntime(t, s, sb.ID); rt != "crun" {
					t.Errorf("sandbox %s runs under %q, want the server's crun", sb.ID, rt)
				}
			}
			if len(tokens) != 2 {
				t.Errorf("cold sandboxes served %d distinct tokens, want 2 (each starts its own command)", len(tokens))
			}
		})
	}
}

// TestCodeInterpreterTemplateEnv: a template built FROM code-interpreter
// inherits its kernel server as start command, which is not snapshotted
// (it would answer runCode several times slower in a restored runsc
// sandbox): its sandboxes start it under crun, or come from the warm pool
// with the kernel (numpy preloaded) started before the claim. Each must
// still see its own create-time env vars and ID in the kernel.
func TestCodeInterpreterTemplateEnv(t *testing.T) {
	s := StartServer(t)
	c := s.Client(t)
	dir := t.TempDir()
	writeContext(t, dir, map[string]string{"e2b.Dockerfile": "FROM code-interpreter\nRUN echo ci > /opt/ci.txt\n"})
	out, err := templateCLI(t, s, dir, "build", "--name", "ci-snap")
	if err != nil || !strings.Contains(out, "not snapshotted") || strings.Contains(out, "snapshot: saved") {
		t.Fatalf("template build (want no snapshot of the inherited kernel server): %v\n%s", err, out)
	}
	for i := range 3 { // the first starts cold and the template's pool; later ones come from it
		sb, err := c.Create(t.Context(), sdk.CreateOptions{Template: "ci-snap", EnvVars: map[string]string{"WHO": fmt.Sprint("sandbox", i)}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sb.Kill(context.Background()) })
		ex, err := sb.RunCode(t.Context(), `import os, sys; print(os.environ.get("WHO"), os.environ.get("E2B_SANDBOX_ID"), "numpy" in sys.modules, open("/opt/ci.txt").read().strip())`, nil)
		if err != nil {
			t.Fatal(err)
		}
		if rt := sandboxRuntime(t, s, sb.ID); rt != "crun" {
			t.Errorf("code-interpreter sandbox %s runs under %q, want the server's crun", sb.ID, rt)
		}
		want := fmt.Sprintf("sandbox%d %s True ci\n", i, sb.ID)
		if got := strings.Join(ex.Logs.Stdout, ""); got != want || ex.Error != nil {
			t.Errorf("sandbox %d: kernel printed %q (error %v), want %q", i, got, ex.Error, want)
		}
	}
}

// TestTemplateStartCommandFails: a start command that dies before it is
// ready fails the build at once, with its exit code and output, and the
// template keeps its previous build.
func TestTemplateStartCommandFails(t *testing.T) {
	s := StartServer(t)
	c := s.Client(t)
	dir := t.TempDir()
	writeContext(t, dir, map[string]string{"e2b.Dockerfile": snapshotDockerfile})
	if out, err := templateCLI(t, s, dir, "build", "--name", "fails-later", "--ready-cmd=curl -sf http://127.0.0.1:8000"); err != nil {
		t.Fatalf("first build: %v\n%s", err, out)
	}
	writeContext(t, dir, map[string]string{"e2b.Dockerfile": "FROM base\nRUN echo v2 > /opt/v2.txt\nCMD [\"sh\", \"-c\", \"echo cannot load the model >&2; exit 3\"]\n"})
	t0 := time.Now()
	out, err := templateCLI(t, s, dir, "build", "--name", "fails-later", "--ready-cmd=curl -sf http://127.0.0.1:8000")
	if err == nil {
		t.Fatalf("build with a failing start command succeeded:\n%s", out)
	}
	for _, want := range []string{"exited with code 3", "\ncannot load the model"} {
		if n := strings.Count(out, want); n != 1 {
			t.Errorf("build output has %q %d times, want once:\n%s", want, n, out)
		}
	}
	t.Logf("failed after %s (the ready check would have waited a minute)", time.Since(t0).Round(time.Millisecond))
	// Without a ready command, a start command that is not there (or that
	// exits at once) fails the build too, instead of snapshotting nothing.
	for _, tc := range []struct{ start, want string }{
		{"nosuchcommand", "exited with code 127"},
		{"echo daemonized", "nothing would run"},
	} {
		out, err := templateCLI(t, s, dir, "build", "--name", "fails-later", "-c", tc.start)
		if err == nil || strings.Count(out, tc.want) != 1 {
			t.Errorf("build with start command %q: err %v; want a failure saying %q once:\n%s", tc.start, err, tc.want, out)
		}
	}
	sb, err := c.Create(t.Context(), sdk.CreateOptions{Template: "fails-later"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Kill(context.Background()) })
	if got := runIn(t, sb, "test -e /opt/v2.txt && echo v2 || cat /opt/built.txt"); got != "built\n" {
		t.Errorf("after the failed build the template serves %q, want the previous build", got)
	}
}
