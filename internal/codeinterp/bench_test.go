package codeinterp

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// BenchmarkExecute measures the /execute round trip of "1+1" against a
// warm kernel over loopback HTTP, as the SDK sees it, and the CPU it
// costs: the kernel process's (kernel-cpu-ms/op) and this process's, which
// is the server and the HTTP client (go-cpu-ms/op).
func BenchmarkExecute(b *testing.B) {
	for _, driver := range []string{PythonRunner, PythonKernel} {
		b.Run(driver, func(b *testing.B) { benchmarkExecute(b, driver) })
	}
}

func benchmarkExecute(b *testing.B, driver string) {
	s, ts := newTestServer(b, Config{PythonDriver: driver, DefaultLanguages: []string{"python"}})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	body := []byte(`{"code":"1+1"}`)
	c, err := s.defaultContext(b.Context(), "python")
	if err != nil {
		b.Fatal(err)
	}
	var kernelPid int
	switch r := c.run.(type) {
	case *kernelRunner:
		kernelPid = r.k.Pid()
	case *pyRunner:
		kernelPid = r.proc.cmd.Process.Pid
	}
	for range 10 { // the first runs import and compile more than the rest
		resp, err := client.Post(ts.URL+"/execute", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	durs := make([]time.Duration, 0, b.N)
	kernel0, self0 := procCPU(b, kernelPid), procCPU(b, os.Getpid())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		resp, err := client.Post(ts.URL+"/execute", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		durs = append(durs, time.Since(start))
		if !bytes.Contains(out, []byte(`"text":"2"`)) {
			b.Fatalf("unexpected output %s", out)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64((procCPU(b, kernelPid)-kernel0).Microseconds())/1000/float64(b.N), "kernel-cpu-ms/op")
	b.ReportMetric(float64((procCPU(b, os.Getpid())-self0).Microseconds())/1000/float64(b.N), "go-cpu-ms/op")
	sort.Slice(durs, func(i, j int) bool { return durs[i] < durs[j] })
	b.ReportMetric(float64(durs[len(durs)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(durs[len(durs)*95/100].Microseconds())/1000, "p95-ms")
}

// procCPU returns the CPU time all threads of process pid have run,
// from the scheduler's nanosecond counts (finer than the tick-based
// utime and stime of /proc/PID/stat).
func procCPU(t testing.TB, pid int) time.Duration {
	t.Helper()
	files, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(files) == 0 {
		t.Fatalf("no schedstat for pid %d: %v", pid, err)
	}
	var total time.Duration
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a thread that exited meanwhile
		}
		var ns int64
		if _, err := fmt.Sscan(string(b), &ns); err == nil {
			total += time.Duration(ns)
		}
	}
	return total
}
