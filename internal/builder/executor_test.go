package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/network"
	"github.com/sbxdev/sbx/internal/rootfs"
	"github.com/sbxdev/sbx/internal/runtime/oci"
	"github.com/sbxdev/sbx/internal/runtime/runtimetest"
	"github.com/sbxdev/sbx/internal/testenv"
)

// requireBuildHost skips without root and crun, or fails when CI sets
// SBX_REQUIRE_INTEGRATION=1.
func requireBuildHost(t *testing.T) {
	t.Helper()
	testenv.Require(t, testenv.Root, testenv.Crun)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

var (
	netOnce sync.Once
	netMgr  *network.Manager
	netErr  error
)

// TestMain removes the test bridge the integration tests share.
func TestMain(m *testing.M) {
	code := m.Run()
	if netMgr != nil {
		_ = netMgr.Uninstall(context.Background())
		netMgr.Close()
	}
	os.Exit(code)
}

type testEnv struct {
	exec *Executor
	base Base
	data string
}

// newTestEnv wires a real crun driver, a real network (own bridge) and the
// machine-wide base root filesystem (built once per machine, minutes).
func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	requireBuildHost(t)
	log := testLogger(t)
	data := runtimetest.Dir(t) // build sandboxes' roots must reach their scratch dirs
	if err := oci.PrepareHost(log); err != nil {
		t.Fatal(err)
	}
	// As sbx serve runs it: user namespaces on.
	drv, err := oci.New(oci.Config{Runtime: "crun", StateDir: filepath.Join(data, "runtime"),
		SandboxDir: filepath.Join(data, "sandboxes"), UserNS: true}, log)
	if err != nil {
		t.Fatal(err)
	}
	netOnce.Do(func() {
		netMgr, netErr = network.New(network.Config{NetnsDir: filepath.Join(os.TempDir(), "sbx-builder-test-netns"),
			Subnet: "10.249.78.0/24"}, log)
	})
	if netErr != nil {
		t.Fatal(netErr)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Minute)
	defer cancel()
	root, err := rootfs.NewBuilder("", log).Ensure(ctx, "base", func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	ex := NewExecutor(Config{DataDir: data, SandboxDir: filepath.Join(data, "sandboxes"), Limits: Limits{DiskMB: 1024, MemoryMB: 1024}}, log, drv, netMgr)
	return &testEnv{exec: ex, data: data,
		base: Base{Key: "base:" + root, Layers: []string{root}, User: "user", Workdir: "/home/user"}}
}

// dirFiles serves one context directory for every COPY hash it was told about.
type dirFiles struct {
	dir    string
	hashes map[string]bool
}

func (f *dirFiles) Dir(_ context.Context, hash string) (string, error) {
	if !f.hashes[hash] {
		return "", errors.New("files " + hash + " were not uploaded")
	}
	return f.dir, nil
}

// plan parses a Dockerfile and gives each COPY step a hash of its source's
// content, as the CLI and the SDK do.
func (f *dirFiles) plan(t *testing.T, dockerfile string) *Plan {
	t.Helper()
	p, err := Parse(strings.NewReader(dockerfile), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if f.hashes == nil {
		f.hashes = map[string]bool{}
	}
	for i, s := range p.Steps {
		if !s.HasFiles() {
			continue
		}
		h := sha256.New()
		h.Write([]byte(s.String()))
		_ = filepath.Walk(filepath.Join(f.dir, s.Args[0]), func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				b, _ := os.ReadFile(p)
				h.Write([]byte(p))
				h.Write(b)
			}
			return nil
		})
		p.Steps[i].FilesHash = hex.EncodeToString(h.Sum(nil))
		f.hashes[p.Steps[i].FilesHash] = true
	}
	return p
}

// inspect runs a shell command as root over a finished build's layers and
// returns its output.
func (env *testEnv) inspect(t *testing.T, res *Result, cmd string) string {
	t.Helper()
	scratch := t.TempDir()
	st := state{user: res.User, workdir: res.Workdir, env: res.Env}
	var out strings.Builder
	code, _, err := env.exec.exec(t.Context(), "inspect"+randHex(4), scratch, res.Layers, st, res.User, cmd, time.Minute,
		func(l string) { out.WriteString(l + "\n") }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Fatalf("inspect %q exited %d:\n%s", cmd, code, out.String())
	}
	return out.String()
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const testDockerfile = `FROM base
ENV GREETING="hello from sbx"
RUN mkdir -p /opt/d && touch /opt/d/old /opt/gone
RUN rm -rf /opt/d /opt/gone && mkdir /opt/d && touch /opt/d/new
WORKDIR /srv/app
COPY --chown=user:user app/ ./
COPY notes.txt /etc/notes.txt
USER user
RUN echo "$GREETING as $(whoami) in $(pwd)" > "$HOME/ran-as" && ls -ld /srv/app >> "$HOME/ran-as"
CMD ["sleep", "1000"]
`

func TestBuildRunCopyEnvWorkdirUser(t *testing.T) {
	env := newTestEnv(t)
	ctxDir := t.TempDir()
	writeFiles(t, ctxDir, map[string]string{"app/main.py": "print('hi')\n", "app/lib/util.py": "X = 1\n", "notes.txt": "v1\n"})
	files := &dirFiles{dir: ctxDir}
	p := files.plan(t, testDockerfile)
	var lines []string
	res, err := env.exec.Build(t.Context(), Request{Base: env.base, Steps: p.Steps, Files: files,
		StartCmd: p.StartCmd, ReadyCmd: "pgrep -x sleep",
		Progress: func(pr Progress) { lines = append(lines, pr.Message) }})
	if err != nil {
		t.Fatalf("build: %v\nlog:\n%s", err, strings.Join(lines, "\n"))
	}
	t.Logf("build log:\n%s", strings.Join(lines, "\n"))
	if res.User != "user" || res.Workdir != "/srv/app" || res.Env["GREETING"] != "hello from sbx" {
		t.Errorf("result user=%q workdir=%q env=%v; want user, /srv/app, GREETING", res.User, res.Workdir, res.Env)
	}
	out := env.inspect(t, res, `cat /home/user/ran-as; stat -c '%U:%G %n' /srv/app/main.py /srv/app/lib/util.py /etc/notes.txt; cat /etc/notes.txt; ls /opt/d; ls /opt; echo "env=$GREETING"; whoami`)
	for _, want := range []string{
		"hello from sbx as user in /srv/app", // RUN sees ENV, USER, WORKDIR
		"user:user /srv/app/main.py", "user:user /srv/app/lib/util.py", "root:root /etc/notes.txt",
		"v1", "env=hello from sbx", "\nuser\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	// The opaque directory and the whiteout from step 4 hide step 3's files.
	if strings.Contains(out, "old") || strings.Contains(out, "gone") {
		t.Errorf("deleted files are visible through the layers:\n%s", out)
	}
	if !strings.Contains(out, "new") {
		t.Errorf("/opt/d/new missing:\n%s", out)
	}
}

func TestBuildCache(t *testing.T) {
	env := newTestEnv(t)
	ctxDir := t.TempDir()
	writeFiles(t, ctxDir, map[string]string{"app/main.py": "v1\n", "notes.txt": "n1\n"})
	files := &dirFiles{dir: ctxDir}
	build := func() (*Result, time.Duration) {
		t.Helper()
		p := files.plan(t, testDockerfile)
		t0 := time.Now()
		res, err := env.exec.Build(t.Context(), Request{Base: env.base, Steps: p.Steps, Files: files})
		if err != nil {
			t.Fatal(err)
		}
		return res, time.Since(t0)
	}
	first, d1 := build()
	if first.Cached != 0 || first.Built != 6 {
		t.Fatalf("first build cached=%d built=%d; want 0 and 6 (4 RUN/COPY + WORKDIR + RUN)", first.Cached, first.Built)
	}
	second, d2 := build()
	if second.Built != 0 || second.Cached != 6 {
		t.Errorf("unchanged rebuild cached=%d built=%d; want every layer reused", second.Cached, second.Built)
	}
	if strings.Join(second.Layers, ":") != strings.Join(first.Layers, ":") {
		t.Errorf("unchanged rebuild gave other layers:\n%v\n%v", first.Layers, second.Layers)
	}
	// Changing notes.txt (step 7 of 10) rebuilds from there on only.
	writeFiles(t, ctxDir, map[string]string{"notes.txt": "n2\n"})
	third, d3 := build()
	if third.Cached != 4 || third.Built != 2 {
		t.Errorf("after changing notes.txt cached=%d built=%d; want 4 cached (up to the app/ COPY) and 2 built", third.Cached, third.Built)
	}
	if out := env.inspect(t, third, "cat /etc/notes.txt"); !strings.Contains(out, "n2") {
		t.Errorf("rebuilt template has old notes.txt: %q", out)
	}
	t.Logf("build %s, unchanged rebuild %s, rebuild after one file changed %s", d1, d2, d3)
}

func TestBuildErrors(t *testing.T) {
	env := newTestEnv(t)
	ctxDir := t.TempDir()
	writeFiles(t, ctxDir, map[string]string{"a.txt": "a\n"})
	for _, tc := range []struct {
		name, dockerfile string
		want             []string
		exit             int
	}{
		{"failing RUN", "FROM base\nRUN echo before-failing && exit 3\n", []string{"Dockerfile line 2 (RUN", "exit code 3", "before-failing"}, 3},
		{"missing COPY source", "FROM base\n\n# comment\nCOPY missing.txt /tmp/\n", []string{"Dockerfile line 4 (COPY", `"missing.txt" matches no file`}, 0},
		{"unknown user", "FROM base\nUSER nobody-here\nRUN true\n", []string{"user nobody-here does not exist"}, 126},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := &dirFiles{dir: ctxDir}
			p := files.plan(t, tc.dockerfile)
			_, err := env.exec.Build(t.Context(), Request{Base: env.base, Steps: p.Steps, Files: files})
			var se *StepError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v; want a StepError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if se.ExitCode != tc.exit {
				t.Errorf("exit code %d, want %d", se.ExitCode, tc.exit)
			}
		})
	}
}

func TestBuildReadyCommandNeverReady(t *testing.T) {
	env := newTestEnv(t)
	env.exec.cfg.ReadyTimeout = time.Second
	files := &dirFiles{dir: t.TempDir()}
	p := files.plan(t, "FROM base\nRUN true\nCMD [\"sh\", \"-c\", \"echo starting; sleep 100\"]\n")
	_, err := env.exec.Build(t.Context(), Request{Base: env.base, Steps: p.Steps, Files: files,
		StartCmd: p.StartCmd, ReadyCmd: "test -f /never"})
	var se *StepError
	if !errors.As(err, &se) || se.Step != 0 || !strings.Contains(err.Error(), "finalize") ||
		!strings.Contains(err.Error(), "ready command never exited 0") || !strings.Contains(err.Error(), "starting") {
		t.Fatalf("err = %v; want a finalize StepError with the start command's output", err)
	}
}

// TestBuildStartCommandExits: a start command that exits within the grace
// period fails the build even without a ready command: with its exit code
// (a typo: 127), or, exiting 0, because nothing would run in sandboxes.
func TestBuildStartCommandExits(t *testing.T) {
	env := newTestEnv(t)
	env.exec.cfg.StartGrace = time.Second
	files := &dirFiles{dir: t.TempDir()}
	for _, tc := range []struct{ start, want string }{
		{"nosuchcommand", "exited with code 127"},
		{"echo started-and-gone", "nothing would run"},
	} {
		t.Run(tc.start, func(t *testing.T) {
			p := files.plan(t, "FROM base\nRUN true\n")
			_, err := env.exec.Build(t.Context(), Request{Base: env.base, Steps: p.Steps, Files: files, StartCmd: tc.start})
			var se *StepError
			if !errors.As(err, &se) || se.Step != 0 || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v; want a finalize StepError saying %q", err, tc.want)
			}
		})
	}
}

// TestBuildLimits: a step over a build limit fails with an error naming the
// limit and its flag, whatever its own exit code.
func TestBuildLimits(t *testing.T) {
	env := newTestEnv(t)
	for _, tc := range []struct {
		name string
		lim  Limits
		run  string
		want string
	}{
		{"memory", Limits{MemoryMB: 128}, `head -c 400m /dev/zero | tail -n 1 >/dev/null; echo survived`, "--build-memory"},
		{"pids", Limits{PidsMax: 32}, `for i in $(seq 64); do sleep 3 & done; wait; echo survived`, "--build-pids"},
		{"disk", Limits{DiskMB: 64}, `head -c 100m /dev/zero > /big; echo survived`, "--build-disk"},
		{"timeout", Limits{StepTimeout: 2 * time.Second}, `sleep 30`, "--build-step-timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := env.exec.cfg.Limits
			if tc.lim.MemoryMB != 0 {
				lim.MemoryMB = tc.lim.MemoryMB
			}
			if tc.lim.PidsMax != 0 {
				lim.PidsMax = tc.lim.PidsMax
			}
			if tc.lim.DiskMB != 0 {
				lim.DiskMB = tc.lim.DiskMB
			}
			if tc.lim.StepTimeout != 0 {
				lim.StepTimeout = tc.lim.StepTimeout
			}
			ex := NewExecutor(Config{DataDir: env.data, SandboxDir: env.exec.cfg.SandboxDir, Limits: lim}, env.exec.log, env.exec.drv, env.exec.net)
			steps := []Step{{Type: StepUser, Args: []string{"root"}}, {Type: StepRun, Args: []string{tc.run}}}
			_, err := ex.Build(t.Context(), Request{Base: env.base, Steps: steps, Force: true})
			var se *StepError
			if !errors.As(err, &se) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v; want a step error naming %s", err, tc.want)
			}
			t.Logf("%s: %v", tc.name, se.Err)
		})
	}
}
