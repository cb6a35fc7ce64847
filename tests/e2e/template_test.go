package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/tests/harness"

	"github.com/sbxdev/sbx/sdk"
)

// templateCLI runs `sbx template ARGS` against s in dir and returns its
// combined output and error.
func templateCLI(t *testing.T, s *Server, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), s.Bin, append([]string{"template"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "E2B_API_URL="+s.URL, "E2B_API_KEY="+s.APIKey, "E2B_SANDBOX_URL="+s.URL)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

var templateIDRE = regexp.MustCompile(`Template ID: ([a-z0-9]{20})`)

func writeContext(t *testing.T, dir string, files map[string]string) {
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

func runIn(t *testing.T, sb *sdk.Sandbox, cmd string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	res, err := sb.Commands.Run(ctx, cmd, sdk.RunOptions{})
	if err != nil {
		t.Fatalf("run %q: %v", cmd, err)
	}
	return res.Stdout
}

const e2eDockerfile = `FROM e2bdev/base:latest
ENV APP_MODE=production
RUN apt-get --version > /opt/apt-version.txt
WORKDIR /home/user/app
COPY --chown=user:user src/ ./
COPY config.txt /etc/app/config.txt
USER user
RUN echo "ran as $(whoami) in $(pwd) mode=$APP_MODE" > /home/user/build-info.txt
CMD ["python3", "-m", "http.server", "8000"]
`

// TestTemplateBuildCLI builds a Dockerfile with `sbx template build`, starts
// sandboxes from it, rebuilds (cached, then after a change), survives a
// restart, and checks that bad builds leave the template as it was.
func TestTemplateBuildCLI(t *testing.T) {
	s := StartServer(t)
	c := s.Client(t)
	dir := t.TempDir()
	writeContext(t, dir, map[string]string{
		"e2b.Dockerfile": e2eDockerfile,
		"src/main.py":    "print('hello')\n",
		"src/big.log":    "ignored\n",
		"config.txt":     "v1\n",
		".dockerignore":  "src/*.log\n",
	})
	out, err := templateCLI(t, s, dir, "build", "--name", "e2e-app", "--ready-cmd", "python3 -c 'import urllib.request as u; u.urlopen(\"http://127.0.0.1:8000\")'")
	if err != nil {
		t.Fatalf("template build: %v\n%s", err, out)
	}
	m := templateIDRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no template ID in output:\n%s", out)
	}
	id := m[1]
	// The start command is snapshotted where runsc is installed, else it
	// runs when each sandbox starts: both must say so.
	started := "snapshot: saved"
	if _, err := exec.LookPath("runsc"); err != nil {
		started = "run the start command when they start"
	}
	for _, want := range []string{"[line 2] ENV APP_MODE production", "[line 3] RUN apt-get --version", started} {
		if !strings.Contains(out, want) {
			t.Errorf("build output lacks %q:\n%s", want, out)
		}
	}
	if cfg, err := os.ReadFile(filepath.Join(dir, "e2b.toml")); err != nil || !strings.Contains(string(cfg), id) {
		t.Errorf("e2b.toml does not record the template ID %s: %v\n%s", id, err, cfg)
	}

	create := func(ref string) *sdk.Sandbox {
		t.Helper()
		sb, err := c.Create(t.Context(), sdk.CreateOptions{Template: ref})
		if err != nil {
			t.Fatalf("create from %s: %v", ref, err)
		}
		t.Cleanup(func() { _ = sb.Kill(context.Background()) })
		return sb
	}
	sb := create("e2e-app")
	got := runIn(t, sb, `whoami; pwd; echo "mode=$APP_MODE"; cat /home/user/build-info.txt /etc/app/config.txt; stat -c '%U %n' main.py; ls; test -s /opt/apt-version.txt && echo apt-ok; pgrep -f "http.server 8000" >/dev/null && echo server-running`)
	for _, want := range []string{"user\n/home/user/app\n", "mode=production", "ran as user in /home/user/app mode=production",
		"v1\n", "user main.py", "apt-ok", "server-running"} {
		if !strings.Contains(got, want) {
			t.Errorf("sandbox from template: output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "big.log") {
		t.Errorf(".dockerignore'd src/big.log was copied:\n%s", got)
	}

	// Unchanged rebuild: every layer cached.
	t0 := time.Now()
	out, err = templateCLI(t, s, dir, "build", "--name", "e2e-app")
	if err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	rebuild := time.Since(t0)
	if !strings.Contains(out, "5 steps cached, 0 built") || !strings.Contains(out, "Template ID: "+id) {
		t.Errorf("unchanged rebuild did not reuse every layer of template %s:\n%s", id, out)
	}
	// One changed file: steps before its COPY stay cached.
	writeContext(t, dir, map[string]string{"config.txt": "v2\n"})
	out, err = templateCLI(t, s, dir, "build", "--name", "e2e-app")
	if err != nil {
		t.Fatalf("rebuild after change: %v\n%s", err, out)
	}
	if !strings.Contains(out, "3 steps cached, 2 built") {
		t.Errorf("after changing config.txt want 3 cached + 2 built:\n%s", out)
	}
	t.Logf("unchanged rebuild through the CLI took %s", rebuild)
	if got := runIn(t, create(id), "cat /etc/app/config.txt"); got != "v2\n" {
		t.Errorf("new sandbox sees config %q, want v2", got)
	}
	if got := runIn(t, sb, "cat /etc/app/config.txt"); got != "v1\n" {
		t.Errorf("running sandbox changed build: config %q, want v1", got)
	}

	// Bad input fails with a clear error; the template keeps its build.
	for _, bad := range []struct{ name, dockerfile, want string }{
		{"unknown base", "FROM no-such-template\nRUN true\n", `unknown base "no-such-template": it is not a template`},
		{"failing RUN", "FROM base\nRUN echo broken-step && exit 42\n", "exit code 42"},
		{"missing COPY", "FROM base\nCOPY nothing-here.txt /tmp/\n", `"nothing-here.txt" matches no file`},
		{"unsupported", "FROM base\nSHELL [\"/bin/bash\", \"-c\"]\n", "line 2: SHELL: not supported"},
		{"exec form that is not JSON", "FROM base\nCMD [ \"sleep\", \"1000\"\n", "line 2: CMD: [ \"sleep\", \"1000\" looks like the exec form but is not valid JSON"},
	} {
		writeContext(t, dir, map[string]string{"e2b.Dockerfile": bad.dockerfile})
		out, err := templateCLI(t, s, dir, "build", "--name", "e2e-app")
		if err == nil || !strings.Contains(out, bad.want) {
			t.Errorf("%s: err=%v, want failure mentioning %q:\n%s", bad.name, err, bad.want, out)
		}
		if bad.name == "failing RUN" && !strings.Contains(out, "broken-step") {
			t.Errorf("failing RUN: output of the step missing:\n%s", out)
		}
	}
	if got := runIn(t, create("e2e-app"), "cat /etc/app/config.txt"); got != "v2\n" {
		t.Errorf("after failed builds the template serves config %q, want v2 (last good build)", got)
	}

	// Templates survive a restart.
	s.Stop(syscall.SIGTERM)
	s.Start(t)
	if got := runIn(t, create("e2e-app"), "cat /etc/app/config.txt; whoami"); got != "v2\nuser\n" {
		t.Errorf("after restart: %q", got)
	}
	out, err = templateCLI(t, s, dir, "list", "--json")
	var list []map[string]any
	if err != nil || json.Unmarshal([]byte(out), &list) != nil {
		t.Fatalf("template list --json: %v\n%s", err, out)
	}
	found := false
	for _, tpl := range list {
		found = found || tpl["templateID"] == id
	}
	if !found {
		t.Errorf("template %s missing from list:\n%s", id, out)
	}

	// Another team neither sees nor deletes it.
	other := s.ClientWithKey(t, s.CreateTeam(t, "tpl-other"))
	if tpls, err := other.ListTemplates(t.Context()); err != nil {
		t.Fatal(err)
	} else {
		for _, tpl := range tpls {
			if tpl.TemplateID == id {
				t.Errorf("another team lists template %s", id)
			}
		}
	}
	if out, err := templateCLI(t, s, dir, "delete", "e2e-app"); err != nil {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	if _, err := c.Create(t.Context(), sdk.CreateOptions{Template: id}); err == nil {
		t.Errorf("created a sandbox from deleted template %s", id)
	}
	if got := runIn(t, sb, "cat /etc/app/config.txt"); got != "v1\n" {
		t.Errorf("running sandbox broke after its template was deleted: %q", got)
	}
}

// TestTemplateLibrary builds every template in templates/ (Debian packages:
// minutes on a fresh data dir) and runs its check.sh in a sandbox from it.
func TestTemplateLibrary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the template library (minutes of apt-get); skipped with -short")
	}
	s := StartServer(t, harness.MirrorAllowFlags(t)...) // apt-get in build sandboxes
	c := s.Client(t)
	lib := filepath.Join(harness.RepoRoot(t), "templates")
	dirs, err := filepath.Glob(filepath.Join(lib, "*", "e2b.Dockerfile"))
	if err != nil || len(dirs) < 4 {
		t.Fatalf("template library: %v %v", dirs, err)
	}
	for _, df := range dirs {
		name := filepath.Base(filepath.Dir(df))
		t.Run(name, func(t *testing.T) {
			// Build from a copy: the CLI records the template ID in e2b.toml.
			dir := t.TempDir()
			for _, f := range []string{"e2b.Dockerfile", "check.sh"} {
				b, err := os.ReadFile(filepath.Join(lib, name, f))
				if err != nil {
					t.Fatal(err)
				}
				writeContext(t, dir, map[string]string{f: string(b)})
			}
			t0 := time.Now()
			out, err := templateCLI(t, s, dir, "build", "--name", "lib-"+name, "--memory", "2048")
			if err != nil {
				t.Fatalf("build %s: %v\n%s", name, err, out)
			}
			first := time.Since(t0)
			t0 = time.Now()
			if out, err := templateCLI(t, s, dir, "build", "--name", "lib-"+name, "--memory", "2048"); err != nil || !strings.Contains(out, " 0 built") {
				t.Errorf("unchanged rebuild of %s: %v\n%s", name, err, out)
			}
			t.Logf("%s: first build %s, unchanged rebuild %s", name, first.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
			check, _ := os.ReadFile(filepath.Join(dir, "check.sh"))
			sb, err := c.Create(t.Context(), sdk.CreateOptions{Template: "lib-" + name})
			if err != nil {
				t.Fatal(err)
			}
			defer sb.Kill(context.Background())
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			res, err := sb.Commands.Run(ctx, string(check), sdk.RunOptions{})
			if err != nil {
				t.Fatalf("check.sh in %s: %v", name, err)
			}
			if !strings.Contains(res.Stdout, name+" ok") {
				t.Errorf("check.sh in %s printed %q (stderr %q)", name, res.Stdout, res.Stderr)
			}
		})
	}
}
