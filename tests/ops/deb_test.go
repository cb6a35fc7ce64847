package ops

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/testenv"
	"github.com/sbxdev/sbx/sdk"
	"github.com/sbxdev/sbx/tests/harness"
)

// TestDebianPackage is the definition of done as closely as this
// machine allows (it has no systemd as PID 1, and the tests must not
// install over the machine's own sbx): `make deb`; the package's control
// data, contents, conffile and maintainer scripts; `apt-get install
// --simulate ./sbx_*.deb` resolving its dependencies on this Debian host;
// a real `dpkg -i` into a throwaway root (maintainer scripts run chrooted
// there); the unit's own ExecStart line, with the installed options file,
// run from that root, serving the Go SDK a sandbox. Then an upgrade: a
// package of a newer version installed over it with dpkg (the operator's
// edited options file kept), the server restarted from the new binary, and
// the sandbox from before still running commands with its files.
func TestDebianPackage(t *testing.T) {
	testenv.Require(t, append(testenv.Integration,
		testenv.Binary("dpkg-deb", "part of dpkg"), testenv.Binary("apt-get", "part of apt"),
		testenv.Binary("busybox", "apt-get install busybox-static"))...)
	root := harness.RepoRoot(t)
	deb, version := makeDeb(t, root)
	arch := strings.TrimSpace(run(t, "", "dpkg", "--print-architecture"))
	if want := "sbx_" + version + "_" + arch + ".deb"; filepath.Base(deb) != want {
		t.Errorf("package file %s, want %s", filepath.Base(deb), want)
	}

	// Control data.
	field := func(name string) string { return strings.TrimSpace(run(t, "", "dpkg-deb", "-f", deb, name)) }
	if got := field("Version"); got != version {
		t.Errorf("Version: %q, want sbx version's %q", got, version)
	}
	if got := field("Architecture"); got != arch {
		t.Errorf("Architecture: %q, want %q", got, arch)
	}
	for _, dep := range []string{"crun | runc", "debootstrap", "iproute2", "iptables"} {
		if !slices.Contains(strings.Split(field("Depends"), ", "), dep) {
			t.Errorf("Depends %q lacks %q", field("Depends"), dep)
		}
	}

	// Contents: exactly these files, with these modes.
	var files []string
	for _, line := range strings.Split(strings.TrimSpace(run(t, "", "dpkg-deb", "-c", deb)), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && !strings.HasPrefix(f[0], "d") {
			files = append(files, f[0]+" "+f[1]+" "+strings.TrimPrefix(f[5], "."))
		}
	}
	want := []string{
		"-rw-r--r-- root/root /etc/default/sbx",
		"-rw-r--r-- root/root /lib/systemd/system/sbx.service",
		"-rwxr-xr-x root/root /usr/bin/sbx",
		"-rwxr-xr-x root/root /usr/lib/sbx/codeinterp",
		"-rwxr-xr-x root/root /usr/lib/sbx/envd",
		"-rw-r--r-- root/root /usr/share/doc/sbx/operations.md",
	}
	slices.Sort(files)
	slices.Sort(want)
	if !slices.Equal(files, want) {
		t.Errorf("package contents:\n%s\nwant:\n%s", strings.Join(files, "\n"), strings.Join(want, "\n"))
	}

	// Control archive: the options file is a conffile, the scripts parse.
	ctl := t.TempDir()
	run(t, "", "dpkg-deb", "-e", deb, ctl)
	if b, _ := os.ReadFile(filepath.Join(ctl, "conffiles")); strings.TrimSpace(string(b)) != "/etc/default/sbx" {
		t.Errorf("conffiles: %q, want /etc/default/sbx", b)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		p := filepath.Join(ctl, s)
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("maintainer script %s missing or not executable: %v", s, err)
			continue
		}
		run(t, "", "sh", "-n", p)
	}

	// apt resolves the package's dependencies on this host, changing nothing.
	if out, err := exec.CommandContext(t.Context(), "apt-get", "install", "--simulate", "--no-download", deb).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "Conf sbx ("+version) {
		t.Errorf("apt-get install --simulate %s: %v\n%s", deb, err, out)
	}

	inst := dpkgInstall(t, deb)
	if st := dpkg(t, inst, "-s", "sbx"); !strings.Contains(st, "Status: install ok installed") || !strings.Contains(st, "Version: "+version) {
		t.Errorf("dpkg -s sbx in the throwaway root:\n%s", st)
	}
	unit, _ := os.ReadFile(filepath.Join(inst, "lib", "systemd", "system", "sbx.service"))
	checkUnit(t, string(unit), "/usr/bin/sbx", "/etc")
	s, sb := serveAsTheUnitDoes(t, inst, string(unit))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if _, err := sb.Files.Write(ctx, "before-upgrade.txt", []byte("kept")); err != nil {
		t.Fatal(err)
	}

	// The upgrade. The operator edited the options file meanwhile.
	opts := filepath.Join(inst, "etc", "default", "sbx")
	edited, _ := os.ReadFile(opts)
	edited = append(edited, "# edited by the operator\n"...)
	if err := os.WriteFile(opts, edited, 0o644); err != nil {
		t.Fatal(err)
	}
	next := version + "+upgrade"
	if strings.Contains(version, "+") {
		next = version + ".upgrade" // still sorts after version for dpkg
	}
	newDeb, _ := makeDeb(t, root, "VERSION="+next)
	dpkg(t, inst, "--force-confold", "-i", newDeb)
	if b, _ := os.ReadFile(opts); !strings.Contains(string(b), "# edited by the operator") {
		t.Errorf("the upgrade replaced the edited %s", opts)
	}
	if st := dpkg(t, inst, "-s", "sbx"); !strings.Contains(st, "Version: "+next) {
		t.Errorf("dpkg -s sbx after the upgrade:\n%s", st)
	}
	// What `systemctl restart sbx` (postinst's try-restart) does to the
	// server: SIGTERM to it alone (KillMode=process), then ExecStart again.
	s.Stop(syscall.SIGTERM)
	s.Start(t)
	if v := sbxVersion(t, s.Bin).Version; v != next {
		t.Errorf("installed sbx reports %s after the upgrade, want %s", v, next)
	}
	again, err := s.Client(t).Connect(ctx, sb.ID, sdk.ConnectOptions{})
	if err != nil {
		t.Fatalf("the sandbox did not survive the upgrade: %v\n%s", err, s.Log())
	}
	if b, err := again.Files.Read(ctx, "before-upgrade.txt"); err != nil || string(b) != "kept" {
		t.Errorf("file written before the upgrade: %q, %v", b, err)
	}
	res, err := again.Commands.Run(ctx, "echo after-upgrade", sdk.RunOptions{})
	if err != nil || strings.TrimSpace(res.Stdout) != "after-upgrade" {
		t.Errorf("command after the upgrade: %+v, %v", res, err)
	}
}

// makeDeb runs `make deb` with builds and output in directories of the
// test's own, and returns the package and its version.
func makeDeb(t *testing.T, root string, vars ...string) (string, string) {
	t.Helper()
	binDir, dist := t.TempDir(), t.TempDir()
	run(t, root, "make", append([]string{"--no-print-directory", "deb", "BIN=" + binDir, "DIST=" + dist}, vars...)...)
	debs, _ := filepath.Glob(filepath.Join(dist, "sbx_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb left %v in %s, want one sbx_*.deb", debs, dist)
	}
	return debs[0], sbxVersion(t, filepath.Join(binDir, "sbx")).Version
}

// dpkgInstall installs deb with dpkg into a new throwaway root holding only
// an empty dpkg database and busybox as /bin/sh, which the maintainer
// scripts run under, chrooted there. Dependencies are forced: they are
// this host's (checked with apt above), not the throwaway root's.
func dpkgInstall(t *testing.T, deb string) string {
	t.Helper()
	inst := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "bin"} {
		if err := os.MkdirAll(filepath.Join(inst, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(inst, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	bb, _ := exec.LookPath("busybox")
	run(t, "", "cp", bb, filepath.Join(inst, "bin", "busybox"))
	if err := os.Symlink("busybox", filepath.Join(inst, "bin", "sh")); err != nil {
		t.Fatal(err)
	}
	dpkg(t, inst, "-i", deb)
	return inst
}

func dpkg(t *testing.T, inst string, args ...string) string {
	t.Helper()
	args = append([]string{"--root=" + inst, "--force-depends", "--log=/dev/null"}, args...)
	out, err := exec.CommandContext(t.Context(), "dpkg", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// serveAsTheUnitDoes runs the installed unit's ExecStart with $SBX_OPTS
// from the installed options file, as systemd would, except that paths
// point into the throwaway root and the harness picks the data dir and a
// free port (the unit's --data-dir and the options' --listen are dropped,
// and nothing else), then drives it with the Go SDK.
func serveAsTheUnitDoes(t *testing.T, inst, unit string) (*harness.Server, *sdk.Sandbox) {
	t.Helper()
	var execStart string
	for _, l := range strings.Split(unit, "\n") {
		if v, ok := strings.CutPrefix(l, "ExecStart="); ok {
			execStart = v
		}
	}
	opts := envFileValue(t, filepath.Join(inst, "etc", "default", "sbx"), "SBX_OPTS")
	args := strings.Fields(strings.ReplaceAll(execStart, "$SBX_OPTS", opts))
	if len(args) < 2 || args[0] != "/usr/bin/sbx" || args[1] != "serve" {
		t.Fatalf("ExecStart=%s: want /usr/bin/sbx serve ...", execStart)
	}
	var extra []string
	for i := 2; i < len(args); i++ {
		if args[i] == "--data-dir" || args[i] == "--listen" {
			i++
			continue
		}
		extra = append(extra, args[i])
	}
	t.Setenv("SBX_BIN", filepath.Join(inst, "usr", "bin", "sbx"))
	s := harness.StartServer(t, extra...)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	sb, err := s.Client(t).Create(ctx, sdk.CreateOptions{Timeout: 10 * time.Minute})
	if err != nil {
		t.Fatalf("create a sandbox on the packaged sbx: %v\n%s", err, s.Log())
	}
	t.Cleanup(func() { s.Client(t).Kill(context.Background(), sb.ID) })
	res, err := sb.Commands.Run(ctx, "cat /etc/os-release | head -1", sdk.RunOptions{})
	if err != nil || !strings.Contains(res.Stdout, "Debian") {
		t.Fatalf("command in the packaged sbx's sandbox: %+v, %v", res, err)
	}
	// The agent came from the package's /usr/lib/sbx, found from /usr/bin/sbx.
	pkgEnvd, _ := os.ReadFile(filepath.Join(inst, "usr", "lib", "sbx", "envd"))
	used, _ := os.ReadFile(filepath.Join(s.DataDir, "agent", "envd"))
	if len(pkgEnvd) == 0 || !slices.Equal(pkgEnvd, used) {
		t.Errorf("the data dir's envd is not the package's /usr/lib/sbx/envd")
	}
	return s, sb
}

// envFileValue reads KEY="value" from a systemd EnvironmentFile.
func envFileValue(t *testing.T, path, key string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), key+"="); ok {
			return strings.Trim(v, `"`)
		}
	}
	t.Fatalf("%s sets no %s", path, key)
	return ""
}
