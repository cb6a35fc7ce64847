package runtimetest

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Skip skips the test with reason, or fails it when SBX_REQUIRE_INTEGRATION=1
// (CI sets it so that a missing dependency cannot turn the run green).
func Skip(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("SBX_REQUIRE_INTEGRATION") == "1" {
		t.Fatalf("SBX_REQUIRE_INTEGRATION=1 but: %s", reason)
	}
	t.Skip(reason)
}

// RequireRoot skips (or fails, see Skip) when not running as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "needs root to mount filesystems and run an OCI runtime")
	}
}

// BusyboxRootfs builds a minimal root filesystem from the host's static
// busybox (Debian package busybox-static) in a temporary directory: small,
// built in milliseconds, and independent of the project's template recipes.
func BusyboxRootfs(t testing.TB) string {
	t.Helper()
	src := "/bin/busybox"
	if _, err := os.Stat(src); err != nil {
		if p, err := exec.LookPath("busybox"); err == nil {
			src = p
		} else {
			Skip(t, "no busybox on this host: apt-get install -y busybox-static")
		}
	}
	if !isStatic(src) {
		Skip(t, src+" is dynamically linked: apt-get install -y busybox-static")
	}
	root := filepath.Join(t.TempDir(), "rootfs")
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "run", "root", "mnt", "out"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	list, err := exec.Command(src, "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(root, "bin", applet)); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
		"etc/group":  "root:x:0:\ntty:x:5:\nuser:x:1000:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// isStatic reports whether the ELF binary has no program interpreter, so it
// runs in a root filesystem without a libc.
func isStatic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}
