package oci

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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
			cpu0 := cpuTime(b)
			host := hostCPU(b)
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
			// The CPU a start + delete costs the host: this process (the
			// driver, its mounts and namespace work in the kernel) and the
			// runtime processes it waited for. The sandbox's own processes
			// are not in it (they are reparented, not waited for).
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/1000/float64(len(starts)), "cpu-ms/op")
			if d, ok := host(); ok {
				b.ReportMetric(float64(d.Microseconds())/1000/float64(len(starts)), "host-cpu-ms/op")
			}
		})
	}
}

// hostCPU moves this process into a cpuacct cgroup of its own (cgroup v1)
// and returns a function that reports the CPU used in it since: this
// process and every process it started, the runtime's detached ones
// included (crun run --detach does its work in a grandchild that
// getrusage never counts), until they moved into a sandbox's cgroup.
// It reports false where there is no cpuacct hierarchy.
func hostCPU(b *testing.B) func() (time.Duration, bool) {
	b.Helper()
	root := filepath.Join(cgroupRoot, "cpuacct")
	dir := filepath.Join(root, "sbx-bench-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return func() (time.Duration, bool) { return 0, false }
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
		_ = os.Remove(dir)
		return func() (time.Duration, bool) { return 0, false }
	}
	b.Cleanup(func() {
		_ = os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0)
		_ = os.Remove(dir)
	})
	return func() (time.Duration, bool) {
		return time.Duration(readUint(filepath.Join(dir, "cpuacct.usage"))), true
	}
}

// cpuTime is the user + system time of this process and of its children
// that ended and were waited for.
func cpuTime(b *testing.B) time.Duration {
	b.Helper()
	var total time.Duration
	for _, who := range []int{unix.RUSAGE_SELF, unix.RUSAGE_CHILDREN} {
		var ru unix.Rusage
		if err := unix.Getrusage(who, &ru); err != nil {
			b.Fatal(err)
		}
		total += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return total
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

// BenchmarkRootfs measures what user namespaces add to a start outside the
// OCI runtime, without its noise: the root filesystem (lease, idmapped
// layer, chowns, overlay) and the network namespace preparation. The
// rest of a start (crun run) is the same with and without:
//
//	go test ./internal/runtime/oci -run XXX -bench Rootfs -benchtime 300x
func BenchmarkRootfs(b *testing.B) {
	runtimetest.RequireRoot(b)
	rootfs := runtimetest.BusyboxRootfs(b)
	for _, userns := range []bool{false, true} {
		name := "plain"
		if userns {
			name = "idmapped"
		}
		b.Run(name, func(b *testing.B) {
			d := newTestDriverWith(b, Config{Runtime: "crun", UserNS: userns, IDLeaseDir: b.TempDir()})
			var ds []time.Duration
			for b.Loop() {
				p := d.paths(runtimetest.NewID(b))
				t0 := time.Now()
				l := layers{lower: []string{rootfs}, diskMB: 64}
				if userns {
					var err error
					if l.ids, l.userns, err = d.leaseIDs(p); err != nil {
						b.Fatal(err)
					}
				}
				if err := mountLayers(b.Context(), p, l); err != nil {
					b.Fatal(err)
				}
				if _, err := writeEtc(p, runtime.Spec{ID: "x"}, l.ids); err != nil {
					b.Fatal(err)
				}
				ds = append(ds, time.Since(t0))
				if err := d.removeDir("", p); err != nil {
					b.Fatal(err)
				}
			}
			report(b, "prepare", ds)
		})
	}
}

// BenchmarkNetNS measures readying a network namespace for a sandbox
// (sysctls, and under user namespaces its own sysfs).
func BenchmarkNetNS(b *testing.B) {
	runtimetest.RequireRoot(b)
	dir := b.TempDir()
	ns := filepath.Join(dir, "ns")
	if err := os.WriteFile(ns, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	// A network namespace pinned by a bind mount, as internal/network makes them.
	if out, err := exec.Command("unshare", "--net="+ns, "true").CombinedOutput(); err != nil {
		b.Skipf("unshare --net: %v: %s", err, out)
	}
	b.Cleanup(func() { _ = unix.Unmount(ns, unix.MNT_DETACH) })
	for _, sysfs := range []bool{false, true} {
		name := "sysctls"
		if sysfs {
			name = "sysctls+sysfs"
		}
		b.Run(name, func(b *testing.B) {
			var ds []time.Duration
			at := ""
			if sysfs {
				at = filepath.Join(dir, "sys")
			}
			for b.Loop() {
				t0 := time.Now()
				if err := prepareNetNS(ns, at); err != nil {
					b.Fatal(err)
				}
				ds = append(ds, time.Since(t0))
				if at != "" {
					_ = unix.Unmount(at, unix.MNT_DETACH)
				}
			}
			report(b, "prepare", ds)
		})
	}
}

// BenchmarkUserNS measures making a uid range's user namespace (what a
// create pays when the host fills up with sandboxes): with the unshare
// program, and with the helper process that re-executes this binary
// stopped at its exec. host-cpu-ms/op counts this process and all it
// started, the helper included.
//
//	go test ./internal/runtime/oci -run XXX -bench UserNS -benchtime 300x
func BenchmarkUserNS(b *testing.B) {
	runtimetest.RequireRoot(b)
	for _, tc := range []struct {
		name string
		make func(*usernsCache) (*os.File, error)
	}{
		{"program", func(c *usernsCache) (*os.File, error) { return c.prog.make(slotRange(3)) }},
		{"helper", func(c *usernsCache) (*os.File, error) { return c.maker.make(slotRange(3)) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var c usernsCache
			b.Cleanup(c.maker.stop)
			// The cgroup first, so that the helper started below counts;
			// the first make loads the program or starts the helper.
			host := hostCPU(b)
			if f, err := tc.make(&c); err != nil {
				b.Skipf("%s: %v", tc.name, err)
			} else {
				f.Close()
			}
			base, _ := host()
			var ds []time.Duration
			for b.Loop() {
				t0 := time.Now()
				f, err := tc.make(&c)
				if err != nil {
					b.Fatal(err)
				}
				ds = append(ds, time.Since(t0))
				f.Close()
			}
			report(b, "make", ds)
			if d, ok := host(); ok {
				b.ReportMetric(float64((d-base).Microseconds())/1000/float64(len(ds)), "host-cpu-ms/op")
			}
		})
	}
}
