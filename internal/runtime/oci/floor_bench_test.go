package oci

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/runtime/runtimetest"
)

// BenchmarkProcessFloor measures what starting a process costs this host
// in CPU, the floor under every sandbox's life: a create runs crun (its
// command and its container child), envd (a Go program) and, for the
// SDK's first command, `bash -l -c`. Each sub-benchmark starts one
// program and waits for it; cpu-ms/op is the user + system time of the
// child and of this process starting and reaping it (what the server
// pays too), which on a machine where page-table work traps to the
// hypervisor (PVM) is many times what bare metal pays:
//
//	go test ./internal/runtime/oci -run XXX -bench ProcessFloor -benchtime 100x
func BenchmarkProcessFloor(b *testing.B) {
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	crun, _ := exec.LookPath("crun")
	bash, _ := exec.LookPath("bash")
	cases := []struct {
		name string
		cmd  func(b *testing.B) *exec.Cmd
	}{
		// A dynamically linked C program that does nothing.
		{"true", func(b *testing.B) *exec.Cmd { return exec.Command("/bin/true") }},
		// A Go binary's runtime and package inits (this test binary, which
		// exits at once as a user namespace holder with stdin closed).
		{"go-binary", func(b *testing.B) *exec.Cmd {
			cmd := exec.Command(self)
			cmd.Env = []string{usernsHolderEnv + "=1"}
			return cmd
		}},
		{"bash-login", func(b *testing.B) *exec.Cmd {
			if bash == "" {
				runtimetest.Skip(b, "bash not on PATH")
			}
			// --noprofile: the host's profile is not a sandbox's; the
			// base template's is a few lines.
			return exec.Command(bash, "--noprofile", "-l", "-c", "echo ok")
		}},
		// crun as the driver runs it (from a sealed copy) and from its
		// file (which makes crun copy and re-execute itself first).
		{"crun-sealed", func(b *testing.B) *exec.Cmd {
			if crun == "" {
				runtimetest.Skip(b, "crun not on PATH")
			}
			out, err := exec.Command(crun, "--version").Output()
			if err != nil {
				b.Fatal(err)
			}
			f, exe, err := sealedBinary(crun, out)
			if err != nil {
				b.Skipf("no sealed copy of crun: %v", err)
			}
			b.Cleanup(func() { f.Close() })
			cmd := exec.Command(exe, "--root", filepath.Join(b.TempDir(), "state"), "list")
			cmd.Args[0] = "crun"
			return cmd
		}},
		{"crun-file", func(b *testing.B) *exec.Cmd {
			if crun == "" {
				runtimetest.Skip(b, "crun not on PATH")
			}
			return exec.Command(crun, "--root", filepath.Join(b.TempDir(), "state"), "list")
		}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			proto := tc.cmd(b)
			var ds []time.Duration
			cpu0 := cpuTime(b)
			for b.Loop() {
				cmd := exec.Command(proto.Path, proto.Args[1:]...)
				cmd.Args[0], cmd.Env = proto.Args[0], proto.Env
				t0 := time.Now()
				out, err := cmd.CombinedOutput()
				if err != nil {
					b.Fatalf("%s: %v: %s", tc.name, err, strings.TrimSpace(string(out)))
				}
				ds = append(ds, time.Since(t0))
			}
			report(b, "wall", ds)
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/1000/float64(len(ds)), "cpu-ms/op")
		})
	}
}
