package oci

import (
	"context"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/runtime/runtimetest"
)

// BenchmarkStartDelete measures Start (overlay + bundle + `run --detach`,
// returning once the init process runs) and Delete, one after another, and
// reports their p50/p95:
//
//	go test ./internal/runtime/oci -run XXX -bench StartDelete -benchtime 200x
//
// crun-no-userns is crun with --userns=false: the difference to crun is the
// cost of user namespaces (lease, idmapped layers, chowns, netns sysctls).
func BenchmarkStartDelete(b *testing.B) {
	for _, cfg := range []Config{{Runtime: "crun", UserNS: true}, {Runtime: "crun"}, {Runtime: "runc", UserNS: true}, {Runtime: "runsc"}} {
		name := cfg.Runtime
		if cfg.Runtime == "crun" && !cfg.UserNS {
			name = "crun-no-userns"
		}
		b.Run(name, func(b *testing.B) {
			runtimetest.RequireRoot(b)
			if _, err := exec.LookPath(cfg.Runtime); err != nil {
				b.Skipf("%s not on PATH", cfg.Runtime)
			}
			rootfs := runtimetest.BusyboxRootfs(b)
			d := newTestDriverWith(b, cfg)
			var starts, deletes []time.Duration
			for b.Loop() {
				spec := runtime.Spec{
					ID: runtimetest.NewID(b), Lower: []string{rootfs},
					Args:      []string{"/bin/sleep", "1000"},
					Resources: runtime.Resources{CPUs: 1, MemoryMB: 256, PidsMax: 128},
				}
				t0 := time.Now()
				if err := d.Start(b.Context(), spec); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := d.Delete(b.Context(), spec.ID); err != nil {
					b.Fatal(err)
				}
				starts, deletes = append(starts, t1.Sub(t0)), append(deletes, time.Since(t1))
			}
			report(b, "start", starts)
			report(b, "delete", deletes)
		})
	}
}

func report(b *testing.B, name string, ds []time.Duration) {
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(ds[len(ds)/2]), name+"-p50-ms")
	b.ReportMetric(ms(ds[len(ds)*95/100]), name+"-p95-ms")
}

// BenchmarkPauseResume measures freezing and thawing one running sandbox
// through the cgroup freezer.
func BenchmarkPauseResume(b *testing.B) {
	runtimetest.RequireRoot(b)
	if _, err := exec.LookPath("crun"); err != nil {
		runtimetest.Skip(b, "crun not on PATH")
	}
	d := newTestDriver(b, "crun")
	id := runtimetest.NewID(b)
	spec := runtime.Spec{ID: id, Lower: []string{runtimetest.BusyboxRootfs(b)}, Args: []string{"/bin/sleep", "1000"}}
	if err := d.Start(b.Context(), spec); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = d.Delete(context.Background(), id) })
	var pauses, resumes []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := d.Pause(b.Context(), id); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := d.Resume(b.Context(), id); err != nil {
			b.Fatal(err)
		}
		pauses, resumes = append(pauses, t1.Sub(t0)), append(resumes, time.Since(t1))
	}
	report(b, "pause", pauses)
	report(b, "resume", resumes)
}
