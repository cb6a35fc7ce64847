package oci

import (
	"bytes"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/runtime/runtimetest"
)

// A sandbox started in the background, by a thread below normal priority
// (as a warm pool's start runs), has the least CPU weight and its
// processes that priority; Foreground gives it the default weight and
// every process of it normal priority again (root in the sandbox could
// not).
func TestForegroundRaisesBackgroundSandbox(t *testing.T) {
	requireRuntime(t, "crun")
	rootfs := runtimetest.BusyboxRootfs(t)
	d := newTestDriver(t, "crun")
	var id string
	done := make(chan struct{})
	go func() {
		defer close(done)
		goruntime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 10); err != nil {
			t.Error(err)
			return
		}
		id, _ = startIdle(t, d, rootfs, func(s *runtime.Spec) { s.Resources.Background = true })
	}()
	<-done
	if t.Failed() {
		t.FailNow()
	}
	dir := d.cgroupDir("cpu", id)
	shares := func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "cpu.shares"))
		return strings.TrimSpace(string(b))
	}
	nices := func() []int {
		b, err := os.ReadFile(filepath.Join(dir, "tasks"))
		if err != nil {
			t.Fatal(err)
		}
		var out []int
		for _, f := range bytes.Fields(b) {
			tid, _ := strconv.Atoi(string(f))
			if prio, err := unix.Getpriority(unix.PRIO_PROCESS, tid); err == nil {
				out = append(out, 20-prio) // the raw syscall returns 20 - nice
			}
		}
		return out
	}
	if d.cg.unified {
		t.Skip("cgroup v2 host: the weight is cpu.weight (not checked here)")
	}
	if got := shares(); got != strconv.Itoa(backgroundShares) {
		t.Fatalf("background sandbox's cpu.shares = %s, want %d", got, backgroundShares)
	}
	if n := nices(); len(n) == 0 || n[0] != 10 {
		t.Fatalf("background sandbox's processes' nice = %v, want 10 (inherited)", n)
	}
	if err := d.Foreground(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if got := shares(); got != strconv.Itoa(normalShares) {
		t.Errorf("cpu.shares after Foreground = %s, want %d", got, normalShares)
	}
	for _, n := range nices() {
		if n != 0 {
			t.Errorf("nice after Foreground = %v, want all 0", nices())
			break
		}
	}
	if err := d.Foreground(t.Context(), "nosuchsandbox0000000"); err == nil {
		t.Error("Foreground of an unknown sandbox succeeded")
	}
}
