package codeinterp

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// What a cell's thread prints after the cell ended reaches the server
// between runs, on the runner's side channel, where no run reads it. The
// frames used to pile up until the channel's reader blocked; when the
// runner then died, its death was never seen, and every later run of the
// context wrote to a dead process and reported "the python process exited
// during execution", for good. The next run must get a fresh runner and
// none of the stale output.
func TestOutputBetweenRunsThenDeath(t *testing.T) {
	ts, r := defaultPyRunner(t)
	r.mu.Lock()
	proc := r.proc
	r.mu.Unlock()
	first := proc.cmd.Process.Pid
	t.Cleanup(func() { // before the server's cleanup, whatever happened
		_ = syscall.Kill(-first, syscall.SIGKILL)
		_ = syscall.Kill(first, syscall.SIGKILL)
	})
	gate := filepath.Join(t.TempDir(), "go")
	code := fmt.Sprintf("import os, sys, threading, time\n"+
		"def later():\n"+
		"    while not os.path.exists(%q): time.sleep(0.02)\n"+
		"    for i in range(50): print('between', i)\n"+ // a frame each
		"    sys.stdout.flush()\n"+
		"    os._exit(3)\n"+
		"threading.Thread(target=later, daemon=True).start()", gate)
	if lines := execute(t, ts.URL, map[string]any{"code": code}); len(ofType(lines, "error")) > 0 {
		t.Fatalf("setup: %v", lines)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// The context has seen the runner die before the next run starts (a
	// run racing the death itself finds it exiting, which is another case).
	select {
	case <-proc.dead:
	case <-time.After(60 * time.Second): // a hang, not a slow exit
		t.Fatal("the runner's death was never seen")
	}
	// The first run is told the runner died and how, and runs nothing; the
	// next runs in the fresh runner.
	for i, want := range []string{"ContextRestarted", "2"} {
		done := make(chan []line, 1)
		go func() { done <- execute(t, ts.URL, map[string]any{"code": "1 + 1"}) }()
		var lines []line
		select {
		case lines = <-done:
		case <-time.After(90 * time.Second):
			t.Fatalf("run %d after the death never ended", i)
		}
		if out := stdout(lines); strings.Contains(out, "between") {
			t.Fatalf("run %d shows output of an earlier run's thread: %q", i, out)
		}
		checkToldOrRan(t, i, lines, want, "exit status 3")
	}
}

// checkToldOrRan checks run i after a death: want "ContextRestarted" is
// one such error saying how the process ended (said) and no result; any
// other want is the run's only result, with no error.
func checkToldOrRan(t *testing.T, i int, lines []line, want, said string) {
	t.Helper()
	errs, res := ofType(lines, "error"), ofType(lines, "result")
	if want == "ContextRestarted" {
		if len(errs) != 1 || errs[0].str("name") != want || len(res) > 0 ||
			!strings.Contains(errs[0].str("value"), "exited between runs") || !strings.Contains(errs[0].str("value"), said) {
			t.Fatalf("run %d after a death between runs: %v; want one ContextRestarted saying %q", i, lines, said)
		}
		return
	}
	if len(res) != 1 || res[0].str("text") != want || len(errs) > 0 {
		t.Fatalf("run %d after a death between runs: %v; want %s", i, lines, want)
	}
}

// A Jupyter kernel that dies between runs is replaced, and the next run is
// told its state is gone instead of failing on missing variables: it used
// to start afresh silently.
func TestKernelDeathBetweenRunsIsTold(t *testing.T) {
	s, ts := newTestServer(t, Config{PythonDriver: PythonKernel, DefaultLanguages: []string{"python"}})
	c, err := s.defaultContext(t.Context(), "python")
	if err != nil {
		t.Fatal(err)
	}
	r, ok := c.run.(*kernelRunner)
	if !ok {
		t.Fatalf("python runner is %T, want a Jupyter kernel", c.run)
	}
	r.mu.Lock()
	k := r.k
	r.mu.Unlock()
	code := "import os, threading\nstate = 1\nthreading.Timer(0.2, lambda: os._exit(3)).start()"
	if lines := execute(t, ts.URL, map[string]any{"code": code}); len(ofType(lines, "error")) > 0 {
		t.Fatalf("setup: %v", lines)
	}
	select {
	case <-k.Dead():
	case <-time.After(60 * time.Second):
		t.Fatal("the kernel's death was never seen")
	}
	for i, want := range []string{"ContextRestarted", "False"} {
		checkToldOrRan(t, i, execute(t, ts.URL, map[string]any{"code": "'state' in dir()"}), want, "it ended")
	}
}
