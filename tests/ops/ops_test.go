package ops

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/testenv"
	"github.com/sbxdev/sbx/tests/harness"
)

// run runs a command in the repository and returns its stdout.
func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(out)
}

// build runs `make build` into a directory of its own, so the bin/sbx
// other test packages run (go test runs packages in parallel) is never
// replaced under them, and returns that directory.
func build(t *testing.T, root string, vars ...string) string {
	t.Helper()
	bin := t.TempDir()
	run(t, root, "make", append([]string{"--no-print-directory", "build", "BIN=" + bin}, vars...)...)
	return bin
}

// semver is Semantic Versioning 2.0's grammar, simplified to what the
// Makefile makes: MAJOR.MINOR.PATCH[-pre][+build].
var semver = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

type versionJSON struct {
	Version, Commit, GoVersion, Platform string
	Modified                             bool
}

func sbxVersion(t *testing.T, bin string) versionJSON {
	t.Helper()
	var v versionJSON
	out := run(t, "", bin, "version", "--json")
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("sbx version --json printed %q: %v", out, err)
	}
	return v
}

// TestVersion checks `sbx version` of the Makefile's build: a semantic
// version grown from the VERSION file, the commit checked out, and the
// plain form saying the same.
func TestVersion(t *testing.T) {
	root := harness.RepoRoot(t)
	binDir := build(t, root)
	base, err := os.ReadFile(filepath.Join(root, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "sbx")
	v := sbxVersion(t, bin)
	if !semver.MatchString(v.Version) || !strings.HasPrefix(v.Version, strings.TrimSpace(string(base))) {
		t.Errorf("version %q: want a semantic version starting with VERSION's %q", v.Version, strings.TrimSpace(string(base)))
	}
	if head := strings.TrimSpace(run(t, root, "git", "rev-parse", "HEAD")); v.Commit != head {
		t.Errorf("commit %q, want HEAD %q", v.Commit, head)
	}
	if v.Platform == "" || !strings.HasPrefix(v.GoVersion, "go") {
		t.Errorf("platform %q, go %q", v.Platform, v.GoVersion)
	}
	plain := run(t, "", bin, "version")
	if !strings.HasPrefix(plain, "sbx "+v.Version+"\n") || !strings.Contains(plain, v.Commit[:12]) {
		t.Errorf("sbx version printed %q; want it to start with %q and name the commit", plain, "sbx "+v.Version)
	}
}

// TestMakeInstall installs into a prefix of its own (PREFIX, DESTDIR-free)
// and checks the layout, that the installed sbx runs, and that the unit it
// installs names that sbx and passes `systemd-analyze verify`.
func TestMakeInstall(t *testing.T) {
	testenv.Require(t, testenv.Binary("systemd-analyze", "apt-get install systemd"))
	root := harness.RepoRoot(t)
	prefix := t.TempDir()
	etc := filepath.Join(prefix, "etc")
	units := filepath.Join(prefix, "units")
	binDir := t.TempDir()
	install := []string{"--no-print-directory", "install", "BIN=" + binDir, "PREFIX=" + prefix, "SYSCONFDIR=" + etc, "UNITDIR=" + units}
	run(t, root, "make", install...)
	for _, f := range []string{"bin/sbx", "lib/sbx/envd", "lib/sbx/codeinterp", "etc/default/sbx", "units/sbx.service", "share/doc/sbx/operations.md"} {
		if _, err := os.Stat(filepath.Join(prefix, f)); err != nil {
			t.Errorf("make install left no %s: %v", f, err)
		}
	}
	unitFile := filepath.Join(units, "sbx.service")
	unit, _ := os.ReadFile(unitFile)
	checkUnit(t, string(unit), filepath.Join(prefix, "bin", "sbx"), etc)
	if out, err := exec.Command("systemd-analyze", "verify", "--man=no", unitFile).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unitFile, err, out)
	}
	// The options file is the operator's: a second install keeps it.
	opts := filepath.Join(etc, "default", "sbx")
	if err := os.WriteFile(opts, []byte("SBX_OPTS=\"--listen 0.0.0.0:3000\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, root, "make", install...)
	if b, _ := os.ReadFile(opts); !strings.Contains(string(b), "0.0.0.0:3000") {
		t.Errorf("a second make install replaced %s: %s", opts, b)
	}
	install[1] = "uninstall"
	run(t, root, "make", install...)
	if _, err := os.Stat(filepath.Join(prefix, "bin", "sbx")); err == nil {
		t.Error("make uninstall left bin/sbx")
	}
}

// checkUnit checks what the unit must say for sbx to work as a service.
func checkUnit(t *testing.T, unit, sbx, sysconf string) {
	t.Helper()
	for _, want := range []string{
		"ExecStart=" + sbx + " serve --data-dir /var/lib/sbx $SBX_OPTS",
		"EnvironmentFile=-" + sysconf + "/default/sbx",
		// Sandboxes survive restarts and upgrades only if systemd leaves
		// them alone and the server keeps the host's mount namespace.
		"KillMode=process",
		"Delegate=yes",
		"ExecReload=/bin/kill -HUP $MAINPID",
		"StateDirectoryMode=0711",
		"CapabilityBoundingSet=~CAP_SYS_BOOT CAP_SYS_TIME CAP_WAKE_ALARM CAP_SYS_MODULE CAP_SYS_RAWIO CAP_SYSLOG CAP_MAC_ADMIN CAP_MAC_OVERRIDE CAP_AUDIT_CONTROL CAP_AUDIT_READ CAP_SYS_TTY_CONFIG CAP_BLOCK_SUSPEND",
	} {
		if !strings.Contains(unit, "\n"+want+"\n") {
			t.Errorf("unit lacks the line %q", want)
		}
	}
	for _, banned := range []string{"ProtectSystem=", "PrivateTmp=", "ProtectHome=", "NoNewPrivileges=", "PrivateDevices="} {
		if strings.Contains(unit, "\n"+banned) {
			t.Errorf("unit sets %s: it gives the server a mount namespace or its sandboxes a restriction they inherit (see the unit's header)", banned)
		}
	}
}
