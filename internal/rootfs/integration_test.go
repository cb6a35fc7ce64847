package rootfs

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/testenv"
)

// requireBuildHost skips (or, in CI with SBX_REQUIRE_INTEGRATION=1, fails)
// when this machine cannot build root filesystems.
func requireBuildHost(t *testing.T) {
	t.Helper()
	testenv.Require(t, testenv.Root)
	if _, err := debootstrapPath(); err != nil {
		testenv.Skip(t, "needs debootstrap (run `make deps`)")
	}
}

// integrationBuilder uses the real machine-wide cache: building base takes
// minutes once and is then shared with every other test and `make run`.
func integrationBuilder(t *testing.T) *Builder {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return NewBuilder("", log)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// chrootOut runs argv in root (no mounts needed for these checks).
func chrootOut(t *testing.T, root string, argv ...string) string {
	t.Helper()
	cmd := exec.Command("chroot", append([]string{root}, argv...)...)
	cmd.Env = buildEnv
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("chroot %s %v: %v\n%s", root, argv, err, out)
	}
	return string(out)
}

func TestEnsureBase(t *testing.T) {
	requireBuildHost(t)
	b := integrationBuilder(t)
	lines := 0
	root, err := b.Ensure(t.Context(), "base", func(string) { lines++ })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("base at %s (%d progress lines)", root, lines)
	if !strings.HasPrefix(root, b.CacheDir()+"/base-") || filepath.Base(root) != "rootfs" {
		t.Fatalf("root %q not under %s/base-<hash>/rootfs", root, b.CacheDir())
	}
	if !isComplete(filepath.Dir(root)) {
		t.Fatalf("%s has no %s marker", filepath.Dir(root), completeMarker)
	}

	if got := chrootOut(t, root, "id", "user"); !strings.Contains(got, "uid=1000(user)") {
		t.Errorf("id user = %q, want uid=1000(user)", got)
	}
	if got := chrootOut(t, root, "getent", "passwd", "user"); !strings.HasSuffix(strings.TrimSpace(got), ":/home/user:/bin/bash") {
		t.Errorf("passwd entry %q: want home /home/user and shell /bin/bash", got)
	}
	sudoers, err := os.ReadFile(filepath.Join(root, "etc/sudoers.d/user"))
	if err != nil || !strings.Contains(string(sudoers), "NOPASSWD") {
		t.Errorf("/etc/sudoers.d/user = %q, %v; want a NOPASSWD rule", sudoers, err)
	}
	chrootOut(t, root, "python3", "-c", "import venv, ssl")
	// pip must not refuse with "externally-managed-environment" (PEP 668).
	if got := chrootOut(t, root, "pip3", "config", "list"); !strings.Contains(got, "global.break-system-packages='true'") {
		t.Errorf("pip config = %q, want break-system-packages", got)
	}
	if got := chrootOut(t, root, "node", "-e", "console.log(1+1)"); strings.TrimSpace(got) != "2" {
		t.Errorf("node printed %q, want 2", got)
	}
	if got := chrootOut(t, root, "getent", "hosts", "localhost"); !strings.Contains(got, "localhost") {
		t.Errorf("localhost does not resolve: %q", got)
	}
	if got := chrootOut(t, root, "python3", "-c", "import socket; print(socket.getservbyname('https'))"); strings.TrimSpace(got) != "443" {
		t.Errorf("/etc/services lookup of https = %q, want 443 (netbase)", got)
	}
	for _, bin := range []string{"bash", "sudo", "git", "curl", "ps", "ip", "ping", "nc", "less", "unzip", "xz", "npm", "pip3"} {
		chrootOut(t, root, "sh", "-c", "command -v "+bin)
	}
	apt, err := os.ReadFile(filepath.Join(root, "etc/apt/apt.conf.d/90sbx-sandbox-user"))
	if err != nil || !strings.Contains(string(apt), `APT::Sandbox::User "root";`) {
		t.Errorf("apt sandbox user config = %q, %v", apt, err)
	}
	if src, err := os.ReadFile(filepath.Join(root, "etc/apt/sources.list.d/debian.sources")); err != nil ||
		!strings.Contains(string(src), "bookworm-updates") {
		t.Errorf("apt sources = %q, %v; want bookworm and bookworm-updates", src, err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/apt/sources.list")); err == nil {
		t.Errorf("debootstrap's sources.list left next to debian.sources (duplicate entries)")
	}
	if _, err := os.Lstat(filepath.Join(root, "etc/hostname")); err == nil {
		t.Errorf("/etc/hostname exists; the runtime owns the hostname")
	}
	for _, dir := range []string{".sbx/bin", ".sbx/run"} {
		if fi, err := os.Stat(filepath.Join(root, dir)); err != nil || !fi.IsDir() {
			t.Errorf("/%s: want a directory, got %v", dir, err)
		}
	}
	if fi, err := os.Lstat(filepath.Join(root, "etc/resolv.conf")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("/etc/resolv.conf: want a regular file, got %v", err)
	}
	if fi, err := os.Lstat(filepath.Join(root, "etc/resolv.conf")); err == nil && fi.Mode().Perm() != 0o644 {
		t.Errorf("/etc/resolv.conf mode %v, want 0644", fi.Mode().Perm())
	}
	if debs, _ := filepath.Glob(filepath.Join(root, "var/cache/apt/archives/*.deb")); len(debs) > 0 {
		t.Errorf("apt archives not cleaned: %d .deb files", len(debs))
	}
	if lists, _ := filepath.Glob(filepath.Join(root, "var/lib/apt/lists/*_Packages*")); len(lists) > 0 {
		t.Errorf("apt lists not cleaned: %v", lists)
	}
	if docs, _ := os.ReadDir(filepath.Join(root, "usr/share/doc")); len(docs) > 0 {
		t.Errorf("/usr/share/doc not cleaned: %d entries", len(docs))
	}
	chrootOut(t, root, "runuser", "-u", "user", "--", "sudo", "-n", "true")
	assertNoMountsUnder(t, b.CacheDir())

	// Second Ensure: from the cache, no build output at all.
	lines = 0
	start := time.Now()
	again, err := b.Ensure(t.Context(), "base", func(string) { lines++ })
	if err != nil {
		t.Fatal(err)
	}
	if again != root || lines != 0 {
		t.Errorf("second Ensure = %q with %d progress lines; want %q from cache with none", again, lines, root)
	}
	t.Logf("cached Ensure took %s", time.Since(start))
}

func TestEnsureCodeInterpreter(t *testing.T) {
	requireBuildHost(t)
	b := integrationBuilder(t)
	root, err := b.Ensure(t.Context(), "code-interpreter", nil)
	if err != nil {
		t.Fatal(err)
	}
	chrootOut(t, root, "python3", "-c", "import numpy, pandas, matplotlib, ipykernel, scipy, seaborn, requests, bs4, matplotlib_inline.backend_inline")
	if _, err := os.Stat(filepath.Join(root, "usr/share/jupyter/kernels/python3/kernel.json")); err != nil {
		t.Errorf("python3 kernelspec: %v", err)
	}
	fonts, _ := filepath.Glob(filepath.Join(root, "home/user/.cache/matplotlib/fontlist-*.json"))
	if len(fonts) == 0 {
		t.Errorf("no matplotlib font cache for user")
	}
	// The baked cache must be used as is: matplotlib says so when it rebuilds.
	out := chrootOut(t, root, "runuser", "-u", "user", "--", "env", "HOME=/home/user",
		"python3", "-c", "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot; print('ok')")
	if strings.Contains(out, "building the font cache") || strings.TrimSpace(out) != "ok" {
		t.Errorf("matplotlib as user printed %q; want the baked font cache used", out)
	}
	// ipykernel sets MPLBACKEND to the inline backend when unset, so no
	// config is needed (importing it here would need /proc for psutil).
	src, err := os.ReadFile(filepath.Join(root, "usr/lib/python3/dist-packages/ipykernel/kernelapp.py"))
	if err != nil || !strings.Contains(string(src), `os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"`) {
		t.Errorf("ipykernel does not default to the inline backend (read: %v)", err)
	}
	assertNoMountsUnder(t, b.CacheDir())
}

func assertNoMountsUnder(t *testing.T, dir string) {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mi), "\n") {
		if strings.Contains(line, " "+dir+"/") {
			t.Errorf("mount left behind after build: %s", line)
		}
	}
}
