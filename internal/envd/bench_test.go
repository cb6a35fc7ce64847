package envd

import (
	"os/exec"
	"testing"
)

// BenchmarkStartTrue measures a whole Start round trip of /bin/true over
// HTTP (request, fork/exec, wait, end event); compare with
// BenchmarkForkExecTrue for envd's overhead.
func BenchmarkStartTrue(b *testing.B) {
	e := newEnv(b, nil)
	for b.Loop() {
		s := e.stream(b, "process.Process/Start", map[string]any{"process": map[string]any{"cmd": "/bin/true"}, "stdin": false})
		s.start()
		if r := s.collect(); r.end["status"] != "exit status 0" {
			b.Fatalf("end %v", r.end)
		}
	}
}

func BenchmarkForkExecTrue(b *testing.B) {
	for b.Loop() {
		if err := exec.Command("/bin/true").Run(); err != nil {
			b.Fatal(err)
		}
	}
}
