package oci

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/runtime/runtimetest"
)

// A sandbox started in the background has the least CPU weight;
// Foreground gives it the default weight.
func TestForegroundRaisesBackgroundSandbox(t *testing.T) {
	requireRuntime(t, "crun")
	rootfs := runtimetest.BusyboxRootfs(t)
	d := newTestDriver(t, "crun")
	if d.cg.unified {
		t.Skip("cgroup v2 host: the weight is cpu.weight (not checked here)")
	}
	id, _ := startIdle(t, d, rootfs, func(s *runtime.Spec) { s.Resources.Background = true })
	shares := func() string {
		b, _ := os.ReadFile(filepath.Join(d.cgroupDir("cpu", id), "cpu.shares"))
		return strings.TrimSpace(string(b))
	}
	if got := shares(); got != strconv.Itoa(backgroundShares) {
		t.Fatalf("background sandbox's cpu.shares = %s, want %d", got, backgroundShares)
	}
	if err := d.Foreground(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if got := shares(); got != strconv.Itoa(normalShares) {
		t.Errorf("cpu.shares after Foreground = %s, want %d", got, normalShares)
	}
	if err := d.Foreground(t.Context(), "nosuchsandbox0000000"); err == nil {
		t.Error("Foreground of an unknown sandbox succeeded")
	}
}
