package rootfs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/testenv"
)

// requireRoot skips (or fails under SBX_REQUIRE_INTEGRATION=1) without root.
func requireRoot(t *testing.T) {
	t.Helper()
	testenv.Require(t, testenv.Root) // mount and PID namespaces
}

func TestFlockWait(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "r.lock")
	unlock, err := flockWait(t.Context(), path, nil)
	if err != nil {
		t.Fatal(err)
	}

	// A second open file description conflicts, as another process would.
	waited := false
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := flockWait(ctx, path, func() { waited = true }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock while held = %v, want deadline exceeded", err)
	}
	if !waited {
		t.Error("onWait not called while waiting")
	}

	// Released: a waiter gets it.
	got := make(chan error, 1)
	go func() {
		u, err := flockWait(t.Context(), path, nil)
		if err == nil {
			u()
		}
		got <- err
	}()
	unlock()
	if err := <-got; err != nil {
		t.Fatalf("lock after release: %v", err)
	}
}

func TestIsolatedStreamsOutputAndReportsFailure(t *testing.T) {
	requireRoot(t)
	b := NewBuilder(t.TempDir(), nil)
	var (
		mu    sync.Mutex
		lines []string
	)
	progress := func(l string) { mu.Lock(); lines = append(lines, l); mu.Unlock() }
	// Many lines, so the last ones are still in the pipe when the process
	// exits: they must not be lost, they say what failed.
	err := b.isolated(t.Context(), "t", progress, "/bin/sh", "-c", "echo pid=$$; seq 1 20000; echo the-cause >&2; exit 3")
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "19999\n20000\nthe-cause") {
		t.Fatalf("err = %v; want exit status 3 with the output tail", err)
	}
	if len(lines) != 20002 || lines[0] != "pid=1" || lines[len(lines)-1] != "the-cause" {
		t.Errorf("got %d progress lines, first %q; want 20002 from pid=1 (own PID namespace) to the-cause", len(lines), lines[0])
	}
}

// Mounts made by a build step exist only in its namespace.
func TestIsolatedMountsDoNotLeak(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	b := NewBuilder(dir, nil)
	err := b.isolated(t.Context(), "t", func(string) {}, "/bin/sh", "-c",
		`mount --make-rprivate / && mount -t tmpfs tmpfs "$0" && touch "$0/inside"`, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "inside")); err == nil {
		t.Error("tmpfs mounted in the build namespace is visible on the host")
	}
	assertNoMountsUnder(t, dir)
}

func TestIsolatedCancelKillsEverything(t *testing.T) {
	requireRoot(t)
	b := NewBuilder(t.TempDir(), nil)
	ctx, cancel := context.WithCancel(t.Context())
	started := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		// A background grandchild holding the output pipe must not keep
		// isolated waiting: the PID namespace dies with its first process.
		done <- b.isolated(ctx, "t", func(l string) {
			if l == "ready" {
				once.Do(func() { close(started) })
			}
		}, "/bin/sh", "-c", "sleep 1000 & echo ready; wait")
	}()
	<-started
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestRemoveTreeRefusesMounted(t *testing.T) {
	requireRoot(t)
	dir := filepath.Join(t.TempDir(), "tree")
	mnt := filepath.Join(dir, "rootfs/dev")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) }) // if the test stops early
	if err := os.WriteFile(filepath.Join(mnt, "precious"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := removeTree(dir)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("removeTree over a mount = %v, want a failed precondition", err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "precious")); err != nil {
		t.Errorf("file under the mount was deleted: %v", err)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	if err := removeTree(dir); err != nil {
		t.Fatalf("removeTree after unmount: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists: %v", dir, err)
	}
}

func TestPruneKeepsCurrentAndOtherRecipes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b := NewBuilder(dir, nil)
	s := step{Recipe: Recipe{Name: "code"}, hash: strings.Repeat("a", 64)}
	keep := []string{"code-aaaaaaaaaaaa", "code-interpreter-0123456789ab", "code.lock", "code-0123456789abc", "other-0123456789ab"}
	drop := []string{"code-0123456789ab", ".build-code-0123456789ab"}
	for _, n := range append(append([]string{}, keep...), drop...) {
		if err := os.MkdirAll(filepath.Join(dir, n, "rootfs"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// An old tree another process handed out recently (another sbx version)
	// stays; the same tree idle for longer than keepUsed goes.
	for _, n := range []string{"code-bbbbbbbbbbbb", "code-cccccccccccc"} {
		if err := os.MkdirAll(filepath.Join(dir, n, "rootfs"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := writeMarker(filepath.Join(dir, n), buildInfo{Recipe: "code"}); err != nil {
			t.Fatal(err)
		}
	}
	markUsed(filepath.Join(dir, "code-bbbbbbbbbbbb"))
	idle := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "code-cccccccccccc", completeMarker), idle, idle); err != nil {
		t.Fatal(err)
	}
	keep = append(keep, "code-bbbbbbbbbbbb")
	drop = append(drop, "code-cccccccccccc")

	b.prune(s)
	b.emptyTrash() // prune started it in the background; finish it here
	for _, n := range keep {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Errorf("%s removed: %v", n, err)
		}
	}
	for _, n := range drop {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			t.Errorf("%s kept, want removed", n)
		}
	}
	if trash, _ := filepath.Glob(filepath.Join(dir, trashPrefix+"*")); len(trash) != 0 {
		t.Errorf("trash not emptied: %v", trash)
	}
}

func TestNormaliseResolvConf(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	etc := filepath.Join(root, "etc")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(etc, "resolv.conf")
	if err := os.Symlink("../run/resolv.conf", p); err != nil {
		t.Fatal(err)
	}
	if err := normaliseResolvConf(root); err == nil {
		t.Error("symlinked resolv.conf accepted")
	}
	os.Remove(p)
	if err := os.WriteFile(p, []byte("nameserver 192.0.2.1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := normaliseResolvConf(root); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
}

// Not parallel: it changes PATH and the fallback location.
func TestEnsureWithoutDebootstrapSaysWhatToDo(t *testing.T) {
	requireRoot(t)
	t.Setenv("PATH", t.TempDir())
	old := debootstrapFallback
	debootstrapFallback = filepath.Join(t.TempDir(), "debootstrap")
	t.Cleanup(func() { debootstrapFallback = old })

	dir := t.TempDir()
	_, err := NewBuilder(dir, nil).Ensure(t.Context(), "base", nil)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "make deps") ||
		!strings.Contains(err.Error(), "apt-get install debootstrap") {
		t.Fatalf("Ensure without debootstrap = %v; want a precondition error naming `make deps`", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("cache dir touched before the check: %d entries", len(entries))
	}
}
