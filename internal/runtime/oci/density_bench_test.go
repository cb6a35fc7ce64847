package oci

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/runtime/runtimetest"
)

// BenchmarkStartDeleteAtDensity is BenchmarkStartDelete (crun) with
// SBX_BENCH_IDLE sandboxes (default 300) left running beside it, or, with
// SBX_BENCH_MOUNTS_ONLY=1, only as many host mounts as those sandboxes
// would add (SBX_BENCH_MOUNTS_EACH, default two: the writable layer's
// tmpfs and the overlay root; builds before network's pins.go added a
// third, the network namespace pin), to tell the mount table's share of
// what a start costs at density from everything else's:
//
//	SBX_BENCH_IDLE=300 go test ./internal/runtime/oci -run XXX -bench AtDensity -benchtime 60x
func BenchmarkStartDeleteAtDensity(b *testing.B) {
	runtimetest.RequireRoot(b)
	if _, err := exec.LookPath("crun"); err != nil {
		b.Skip("crun not on PATH")
	}
	idle := 300
	if v, err := strconv.Atoi(os.Getenv("SBX_BENCH_IDLE")); err == nil {
		idle = v
	}
	rootfs := runtimetest.BusyboxRootfs(b)
	d := newTestDriverWith(b, Config{Runtime: "crun", UserNS: true})
	newSpec := func() runtime.Spec {
		return runtime.Spec{
			ID: runtimetest.NewID(b), Lower: []string{rootfs},
			Args:      []string{"/bin/sleep", "100000"},
			Resources: runtime.Resources{CPUs: 1, MemoryMB: 256, PidsMax: 128},
		}
	}
	if os.Getenv("SBX_BENCH_MOUNTS_ONLY") == "1" {
		dir := b.TempDir()
		each := 2
		if v, err := strconv.Atoi(os.Getenv("SBX_BENCH_MOUNTS_EACH")); err == nil {
			each = v
		}
		for i := range idle * each {
			at := filepath.Join(dir, strconv.Itoa(i))
			if err := os.Mkdir(at, 0o755); err != nil {
				b.Fatal(err)
			}
			if err := unix.Mount("tmpfs", at, "tmpfs", 0, "size=1m"); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = unix.Unmount(at, unix.MNT_DETACH) })
		}
	} else {
		for range idle {
			s := newSpec()
			if err := d.Start(b.Context(), s); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = d.Delete(context.Background(), s.ID) })
		}
	}
	var starts, deletes []time.Duration
	var inside time.Duration // the sandbox's cgroup: crun's work after it joined it
	cpu0 := cpuTime(b)
	for b.Loop() {
		s := newSpec()
		t0 := time.Now()
		if err := d.Start(b.Context(), s); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		inside += time.Duration(readUint(filepath.Join(d.cgroupDir("cpuacct", s.ID), "cpuacct.usage")))
		if err := d.Delete(b.Context(), s.ID); err != nil {
			b.Fatal(err)
		}
		starts, deletes = append(starts, t1.Sub(t0)), append(deletes, time.Since(t1))
	}
	report(b, "start", starts)
	report(b, "delete", deletes)
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/1000/float64(len(starts)), "cpu-ms/op")
	b.ReportMetric(float64(inside.Microseconds())/1000/float64(len(starts)), "sandbox-cpu-ms/op")
}
