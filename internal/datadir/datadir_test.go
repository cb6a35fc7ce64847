package datadir

import (
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestPrepareTightens(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "data")
	entries := []struct {
		name      string
		dir       bool
		from, max fs.FileMode
	}{
		{"", true, 0o751, 0o711},
		{"sbx.db", false, 0o644, 0o600},
		{"sbx.db-wal", false, 0o666, 0o600},
		{"api-key", false, 0o644, 0o600},
		{"admin-key", false, 0o640, 0o600},
		{"specs", true, 0o755, 0o700},
		{"specs/abc.json", false, 0o644, 0o600},
		{"checkpoints", true, 0o755, 0o700},
		{"snapshots", true, 0o711, 0o700},
		{"uploads", true, 0o777, 0o700},
		{"sandboxes", true, 0o755, 0o711},
		{"run", true, 0o777, 0o711},
		{"future-file", false, 0o666, 0o600},
	}
	for _, e := range entries {
		p := filepath.Join(root, e.name)
		if e.dir {
			if err := os.MkdirAll(p, 0o700); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Modes are set after creating everything: the root at 0777 last.
	for i := len(entries) - 1; i >= 0; i-- {
		if err := os.Chmod(filepath.Join(root, entries[i].name), entries[i].from); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "agent", "envd"), []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A symlink is left alone (and not followed to its target).
	target := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.WriteFile(target, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := Prepare(root, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		fi, err := os.Stat(filepath.Join(root, e.name))
		if err != nil {
			t.Fatal(err)
		}
		want := e.from & e.max
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%q: mode %04o, want %04o", e.name, got, want)
		}
	}
	for p, want := range map[string]fs.FileMode{"agent": 0o755, "agent/envd": 0o755} {
		if fi, _ := os.Stat(filepath.Join(root, p)); fi.Mode().Perm() != want {
			t.Errorf("%s: mode %04o, want %04o (sandboxes read it)", p, fi.Mode().Perm(), want)
		}
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o644 {
		t.Errorf("a symlink's target was changed to %04o", fi.Mode().Perm())
	}
}

func TestPrepareRoot(t *testing.T) {
	t.Parallel()
	// A 0700 data dir (sbx before user namespaces) becomes 0711: sandboxes
	// running as unprivileged host uids must traverse it to their rootfs.
	root := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Prepare(root, nil); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(root); fi.Mode().Perm() != RootMode {
		t.Errorf("a 0700 data dir became %04o, want %04o", fi.Mode().Perm(), RootMode)
	}
	fresh := filepath.Join(t.TempDir(), "new", "data")
	if err := Prepare(fresh, nil); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(fresh); fi.Mode().Perm() != RootMode {
		t.Errorf("a new data dir has mode %04o, want %04o", fi.Mode().Perm(), RootMode)
	}
}

// The node side's paths are what sandboxes created by earlier versions
// left in data dirs: a path that moved would orphan them.
func TestLayoutNodePaths(t *testing.T) {
	t.Parallel()
	l := Layout{Root: "/d"}
	for got, want := range map[string]string{
		l.SandboxRun("x"):       "/d/run/x",
		l.AgentKey("x"):         "/d/agent-keys/x",
		l.BootID("x"):           "/d/boot-ids/x",
		l.SandboxLayersOf("x"):  "/d/sandbox-layers/x",
		l.Checkpoint("x"):       "/d/checkpoints/x",
		l.Spec("x"):             "/d/specs/x.json",
		l.TemplateSnapshot("k"): "/d/snapshots/k",
		l.SandboxSnapshots():    "/d/sandbox-snapshots",
		l.RuntimeState("runsc"): "/d/runtime/runsc",
		l.Sandboxes():           "/d/sandboxes",
		l.SandboxesOf("runsc"):  "/d/sandboxes-runsc",
		l.Agent():               "/d/agent",
		l.Netns():               "/d/netns",
		l.Images():              "/d/images",
		l.Volumes():             "/d/volumes",
	} {
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
}

// TestPrepareLeavesNamespacePins: a namespace pinned in the data dir
// (netns.mnt) has the kernel's mode, which cannot be changed; Prepare
// must not fail on it, or a server with sandboxes could not restart.
func TestPrepareLeavesNamespacePins(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to bind-mount a namespace")
	}
	root := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(root, 0o711); err != nil {
		t.Fatal(err)
	}
	pin := filepath.Join(root, "netns.mnt")
	if err := os.WriteFile(pin, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("/proc/self/ns/net", pin, "none", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(pin, unix.MNT_DETACH) })
	if err := Prepare(root, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("Prepare with a pinned namespace: %v", err)
	}
}
