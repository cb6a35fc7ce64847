package oci

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/network"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/hostfs"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/runtime/runtimetest"
	"github.com/sbxdev/sbx/internal/testenv"
)

// readCount waits until the sandbox's counter file holds a number above min.
func readCount(t *testing.T, path string, min int) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > min {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter in %s never went above %d (last %q)", path, min, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCheckpointRestore(t *testing.T) {
	requireRuntime(t, "runsc")
	d := newTestDriver(t, "runsc")
	if dbg := os.Getenv("SBX_RUNSC_DEBUG"); dbg != "" {
		d.global = append(d.global, "--debug", "--debug-log="+dbg)
	}
	rootfs := runtimetest.BusyboxRootfs(t)
	// The counter lives in the shell's memory; only its value is written to
	// the host. A file written into the root tests the writable layer.
	var spec runtime.Spec // runsc wants the very same spec at restore
	id, out := startIdle(t, d, rootfs, func(s *runtime.Spec) {
		s.Args = []string{"/bin/sh", "-c", "echo kept > /data; touch /out/ready; i=0; while true; do i=$((i+1)); echo $i > /out/count; sleep 0.05; done"}
		spec = *s
	})
	before := readCount(t, filepath.Join(out, "count"), 3)
	if err := d.Pause(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "ckpt")
	if err := d.Checkpoint(t.Context(), id, dir); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	if st, err := d.State(t.Context(), id); err != nil || st != runtime.StatusCheckpointed {
		t.Fatalf("State after checkpoint = %q, %v; want checkpointed", st, err)
	}
	p := d.paths(id)
	if isMountpoint(p.upperMount()) {
		t.Errorf("writable layer tmpfs still mounted after checkpoint: its memory is not freed")
	}
	if b, err := os.ReadFile(filepath.Join(dir, ckptUpper, "data")); err != nil || string(b) != "kept\n" {
		t.Errorf("checkpoint's copy of /data = %q, %v; want \"kept\\n\"", b, err)
	}
	stopped := readCount(t, filepath.Join(out, "count"), 0)
	// A restore that fails (runsc refuses another spec) leaves the sandbox
	// checkpointed and the checkpoint usable.
	bad := spec
	bad.Args = []string{"/bin/sh", "-c", "exit 0"}
	if err := d.Restore(t.Context(), bad, dir); err == nil {
		t.Fatal("Restore with a different spec succeeded; want runsc's refusal")
	}
	if st, err := d.State(t.Context(), id); err != nil || st != runtime.StatusCheckpointed {
		t.Fatalf("State after a failed restore = %q, %v; want checkpointed", st, err)
	}
	if isMountpoint(p.upperMount()) {
		t.Errorf("failed restore left the writable layer mounted")
	}
	// Restore twice from the same image: the checkpoint dir is reusable.
	for round := range 2 {
		if err := d.Restore(t.Context(), spec, dir); err != nil {
			t.Fatalf("Restore %d: %v", round, err)
		}
		if st, err := d.State(t.Context(), id); err != nil || st != runtime.StatusRunning {
			t.Fatalf("State after restore = %q, %v; want running", st, err)
		}
		got := readCount(t, filepath.Join(out, "count"), stopped)
		if got < before {
			t.Fatalf("counter after restore = %d, below %d before: memory state lost", got, before)
		}
		if b, err := os.ReadFile(filepath.Join(p.upper(), "data")); err != nil || string(b) != "kept\n" {
			t.Errorf("/data after restore = %q, %v", b, err)
		}
		if round == 0 {
			if err := d.Restore(t.Context(), spec, dir); !errors.Is(err, errdefs.ErrAlreadyExists) {
				t.Errorf("Restore of a running sandbox = %v; want already exists", err)
			}
			if err := d.Delete(t.Context(), id); err != nil {
				t.Fatal(err)
			}
			os.Remove(filepath.Join(out, "count"))
			stopped = 0
		}
	}
}

func TestCheckpointUnsupported(t *testing.T) {
	requireRuntime(t, "crun")
	d := newTestDriver(t, "crun")
	if d.CanCheckpoint() {
		t.Fatal("crun reports it can checkpoint")
	}
	err := d.Checkpoint(t.Context(), "abc", t.TempDir()+"/x")
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "runsc") {
		t.Errorf("Checkpoint under crun = %v; want a precondition error naming runsc", err)
	}
}

// TestCheckpointClones restores one checkpoint into several new sandboxes,
// each with its own ID, hostname, mount sources and network namespace: the
// template snapshot path. Every clone must continue from the saved memory
// state and see its own network, not the original's.
func TestCheckpointClones(t *testing.T) {
	requireRuntime(t, "runsc")
	nm, err := network.New(network.Config{NetnsDir: t.TempDir(), Subnet: "10.249.78.0/24"}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nm.Uninstall(context.Background()); nm.Close() })
	newNS := func(internet bool) string {
		nsID := runtimetest.NewID(t)
		p, err := nm.Setup(t.Context(), nsID, internet)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nm.Teardown(context.Background(), nsID) })
		return p
	}
	d := newTestDriver(t, "runsc")
	rootfs := runtimetest.BusyboxRootfs(t)
	var spec runtime.Spec
	id, out := startIdle(t, d, rootfs, func(s *runtime.Spec) {
		s.NetNS = newNS(true)
		s.Hostname = "original"
		s.Args = []string{"/bin/sh", "-c", "echo kept > /data; touch /out/ready; i=0; while true; do i=$((i+1)); echo $i > /out/count; hostname > /out/host; ip addr > /out/addr 2>&1; sleep 0.05; done"}
		spec = *s
	})
	before := readCount(t, filepath.Join(out, "count"), 3)
	origAddr := readAddr(t, filepath.Join(out, "addr"))
	if !strings.Contains(origAddr, "eth0") {
		t.Fatalf("original sandbox has no eth0: %q", origAddr)
	}
	dir := filepath.Join(t.TempDir(), "ckpt")
	if err := d.Checkpoint(t.Context(), id, dir); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	if err := d.Delete(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		c := spec
		c.ID = runtimetest.NewID(t)
		c.Hostname = fmt.Sprintf("clone%d", i)
		c.NetNS = newNS(i == 0)
		cout := t.TempDir()
		// gVisor reopens, by path, the files the checkpointed processes had
		// open; the loop may have had one of /out's open at that moment, so
		// each clone's /out starts with the original's files (as a clone's
		// run dir in sbx holds what the snapshot sandbox's did).
		copyFiles(t, out, cout)
		c.Mounts = []runtime.Mount{{Source: cout, Target: "/out"}}
		if err := d.Restore(t.Context(), c, dir); err != nil {
			t.Fatalf("Restore clone %d: %v", i, err)
		}
		t.Cleanup(func() { _ = d.Delete(context.Background(), c.ID) })
		if got := readCount(t, filepath.Join(cout, "count"), before); got <= before {
			t.Fatalf("clone %d counter %d, want > %d", i, got, before)
		}
		// The loop writes these after each tick; a fresh count means fresh files.
		readCount(t, filepath.Join(cout, "count"), before+2)
		// The loop truncates and rewrites the file: read until it is whole.
		var host []byte
		for deadline := time.Now().Add(5 * time.Second); len(bytes.TrimSpace(host)) == 0 && time.Now().Before(deadline); {
			host, _ = os.ReadFile(filepath.Join(cout, "host"))
			time.Sleep(10 * time.Millisecond)
		}
		if strings.TrimSpace(string(host)) != c.Hostname {
			t.Errorf("clone %d hostname = %q, want %q", i, host, c.Hostname)
		}
		addr := readAddr(t, filepath.Join(cout, "addr"))
		inet := inetOf(addr, "eth0")
		switch {
		case i == 0 && (inet == "" || inet == inetOf(origAddr, "eth0")):
			t.Errorf("clone with a network sees eth0 address %q; want its own, not the original's %q:\n%s", inet, inetOf(origAddr, "eth0"), addr)
		case i == 1 && strings.Contains(addr, "eth0"):
			t.Errorf("clone without a network still has the original's eth0:\n%s", addr)
		}
	}
}

// readAddr waits for a complete `ip addr` listing (the loop rewrites it).
func readAddr(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), "inet 127.0.0.1") {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no complete address listing in %s: %q", path, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// inetOf returns the IPv4 address listed for dev in `ip addr` output.
func inetOf(listing, dev string) string {
	for _, l := range strings.Split(listing, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "inet" && f[len(f)-1] == dev {
			return f[1]
		}
	}
	return ""
}

// copyFiles copies the regular files of src (one level) into dst.
func copyFiles(t *testing.T, src, dst string) {
	t.Helper()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// socketIn finds a unix socket file anywhere in a writable layer (gVisor
// cannot save a sandbox listening on one), and nothing in a layer of
// plain files, directories and symlinks.
func TestSocketIn(t *testing.T) {
	t.Parallel()
	upper := t.TempDir()
	if err := os.MkdirAll(filepath.Join(upper, "home", "user"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(upper, "home", "user", "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/run", filepath.Join(upper, "home", "run")); err != nil {
		t.Fatal(err)
	}
	if got, err := socketIn(upper); err != nil || got != "" {
		t.Fatalf("socketIn without a socket = %q, %v; want none", got, err)
	}
	ln, err := net.Listen("unix", filepath.Join(upper, "home", "user", "app.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got, err := socketIn(upper); err != nil || got != "home/user/app.sock" {
		t.Fatalf("socketIn = %q, %v; want home/user/app.sock", got, err)
	}
	if got, err := socketIn(filepath.Join(upper, "gone")); err != nil || got != "" {
		t.Fatalf("socketIn of a missing layer = %q, %v; want none", got, err)
	}
}

// The attack: a sandbox nests directories in its writable layer far
// deeper than any path (a loop of mkdir and cd), then gets paused to
// disk. The scan before the checkpoint must not follow it down holding a
// server fd (and a path string) per level: here the server has 1,000 fds
// to spare and the chain is 8,000 deep, so a scan that kept one per level
// fails with EMFILE, as every other request of the server would meanwhile.
func TestSocketInDeepChain(t *testing.T) {
	const depth = 8000
	upper := t.TempDir()
	testenv.NestedDirs(t, upper, depth)
	var got string
	var err error
	testenv.WithSpareFDs(t, 1000, func() { got, err = socketIn(upper) })
	if err != nil || got != "" {
		t.Fatalf("socketIn of an %d-deep chain = %q, %.200v; want none, within the server's fds", depth, got, err)
	}
}

// The attack: a sandbox fills one directory of its writable layer (a
// tmpfs) with far more names than the scan's budget, then gets paused to
// disk. The scan must stop at the budget while reading, not read every
// name (and lstat each) first: what it allocates follows the budget, not
// the directory. Not parallel, so the allocation count is this test's.
func TestSocketInWideDirectory(t *testing.T) {
	const entries, budget = 50_000, 100
	upper := testenv.Tmpfs(t)
	wide := filepath.Join(upper, "wide")
	if err := os.Mkdir(wide, 0o755); err != nil {
		t.Fatal(err)
	}
	testenv.ManyFiles(t, wide, entries)
	root, err := hostfs.OpenDir(upper)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	left := budget
	var got string
	alloc := testenv.BytesAllocated(func() { got, err = socketUnder(root, "", 0, &left) })
	if err != nil || got != "" {
		t.Fatalf("socketUnder = %q, %v; want none", got, err)
	}
	// Reading all 50,000 names with a status each allocates several MiB;
	// a budget of 100 entries needs a few KiB and one getdents buffer.
	t.Logf("scan with a budget of %d in a directory of %d: %d KiB allocated", budget, entries, alloc>>10)
	if alloc > 512<<10 {
		t.Errorf("scan with a budget of %d allocated %d KiB in a directory of %d: it read past the budget", budget, alloc>>10, entries)
	}
}
