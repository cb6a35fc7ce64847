package codeinterp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/codeinterp/jupyter"
)

// hangLimit tells a hang from a slow run; nothing is asserted about time.
const hangLimit = 90 * time.Second

// interpreterPid returns the pid of the process that runs a context's
// code now (a kernel, a runner).
func interpreterPid(t *testing.T, c *execContext) int {
	t.Helper()
	switch r := c.run.(type) {
	case *kernelRunner:
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.k.Pid()
	case *pyRunner:
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.proc.cmd.Process.Pid
	case *bashRunner:
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.proc.cmd.Process.Pid
	}
	t.Fatalf("runner %T", c.run)
	return 0
}

// killOnCleanup SIGKILLs, when the test ends, the process groups of the
// pids and the processes themselves, so a test that fails (or a server
// that hangs) leaves no interpreter behind. Registered after the server,
// it runs before the server's own cleanup, which may wait for a hung run.
func killOnCleanup(t *testing.T, pids func() []int) {
	t.Cleanup(func() {
		for _, pid := range pids() {
			if pid > 0 {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
}

// pidFromFile reads the pid a cell wrote (0 if it wrote none).
func pidFromFile(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// abandon posts code and goes away once gate exists (the cell is in its
// endless loop), as a client that timed out or disconnected does. It
// returns once the server has seen the client leave.
func abandon(t *testing.T, base string, body map[string]any, gate string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), hangLimit)
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if _, err := os.Stat(gate); err == nil {
				cancel()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/execute", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if _, err := os.Stat(gate); err != nil {
		t.Fatalf("the cell never reached its loop: %v", err)
	}
}

// executeOrHang is execute that fails the test, rather than hanging it,
// when the run does not end.
func executeOrHang(t *testing.T, base string, body any, what string) []line {
	t.Helper()
	done := make(chan []line, 1)
	go func() { done <- execute(t, base, body) }()
	select {
	case lines := <-done:
		return lines
	case <-time.After(hangLimit):
		t.Fatalf("%s never ended: the context is stuck", what)
		return nil
	}
}

// A cell that ignores SIGINT and never ends, abandoned by its client:
// interrupting it is not enough. The kernel used to stay busy for good
// (one SIGINT, then nothing), holding the context: every later run
// waited behind it, and the kernel outlived the test. Each driver must,
// after a bounded grace period, kill what runs the cell (its process
// group, and the interpreter itself if it left the group), tell the
// context's next run that its state is gone, and then run code again.
func TestAbandonedCellIgnoringSIGINTIsKilled(t *testing.T) {
	for _, driver := range []string{PythonKernel, PythonRunner} {
		for _, leaveGroup := range []bool{false, true} {
			name := driver + "/stays-in-its-group"
			if leaveGroup {
				name = driver + "/left-its-group"
			}
			t.Run(name, func(t *testing.T) {
				testAbandonedCellIgnoringSIGINT(t, driver, leaveGroup)
			})
		}
	}
}

func testAbandonedCellIgnoringSIGINT(t *testing.T, driver string, leaveGroup bool) {
	s, ts := newTestServer(t, Config{PythonDriver: driver, DefaultLanguages: []string{"python"}})
	c, err := s.defaultContext(t.Context(), "python")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	gate, groupPidFile := filepath.Join(dir, "looping"), filepath.Join(dir, "group.pid")
	first := interpreterPid(t, c)
	killOnCleanup(t, func() []int { return []int{first, pidFromFile(groupPidFile)} })

	if lines := execute(t, ts.URL, map[string]any{"code": "kept = 1"}); len(ofType(lines, "error")) > 0 {
		t.Fatalf("setup: %v", lines)
	}
	code := "import os, signal, time\n"
	if leaveGroup {
		// Into the group of a process of its own making, out of reach
		// of a signal to the group the server started it in.
		code += fmt.Sprintf("import subprocess\n"+
			"p = subprocess.Popen(['sleep', '300'], process_group=0)\n"+
			"open(%q, 'w').write(str(p.pid))\n"+
			"os.setpgid(0, p.pid)\n", groupPidFile)
	}
	// Sleeping, not spinning: two cores are shared by every test here.
	code += fmt.Sprintf("signal.signal(signal.SIGINT, signal.SIG_IGN)\n"+
		"open(%q, 'w').close()\n"+
		"while True: time.sleep(0.05)", gate)
	abandon(t, ts.URL, map[string]any{"code": code}, gate)

	lines := executeOrHang(t, ts.URL, map[string]any{"code": "kept"}, "the run after the abandoned one")
	e := ofType(lines, "error")
	if len(e) != 1 || e[0].str("name") != "ContextRestarted" || len(ofType(lines, "result")) > 0 {
		t.Fatalf("the run after the abandoned one must say the context was restarted, and not run: %v", lines)
	}
	if pid := interpreterPid(t, c); pid == first {
		t.Errorf("still the same interpreter process %d", pid)
	}
	if err := syscall.Kill(first, 0); err == nil {
		t.Errorf("the abandoned interpreter %d is still alive", first)
	}
	// The notice is given once; the context then runs code, afresh.
	lines = executeOrHang(t, ts.URL, map[string]any{"code": "'kept' in dir()"}, "the second run after the abandoned one")
	if r := ofType(lines, "result"); len(r) != 1 || r[0].str("text") != "False" || len(ofType(lines, "error")) > 0 {
		t.Fatalf("second run after the kill: %v", lines)
	}
}

// Bash is stopped and reported the same way as the Python drivers.
func TestAbandonedBashLoopIgnoringSIGINTIsKilled(t *testing.T) {
	s, ts := newTestServer(t, Config{DefaultLanguages: []string{"bash"}})
	c, err := s.defaultContext(t.Context(), "bash")
	if err != nil {
		t.Fatal(err)
	}
	first := interpreterPid(t, c)
	killOnCleanup(t, func() []int { return []int{first} })
	gate := filepath.Join(t.TempDir(), "looping")
	execute(t, ts.URL, map[string]any{"code": "KEPT=yes", "language": "bash"})
	abandon(t, ts.URL, map[string]any{"code": "trap '' INT; touch " + gate + "; while :; do sleep 0.05; done", "language": "bash"}, gate)
	for i, want := range []string{"ContextRestarted", "unset\n"} {
		lines := executeOrHang(t, ts.URL, map[string]any{"code": "echo ${KEPT-unset}", "language": "bash"}, "the run after the abandoned one")
		e := ofType(lines, "error")
		if ok := (i == 0 && len(e) == 1 && e[0].str("name") == want && stdout(lines) == "") || (i == 1 && len(e) == 0 && stdout(lines) == want); !ok {
			t.Fatalf("run %d after the abandoned one: %v", i, lines)
		}
	}
}

// A context whose interpreter was killed after its client left, then
// explicitly restarted, owes no notice: the user asked for a new state.
func TestRestartClearsTheAbandonNotice(t *testing.T) {
	s, ts := newTestServer(t, Config{PythonDriver: PythonKernel, DefaultLanguages: []string{"python"}})
	c, err := s.defaultContext(t.Context(), "python")
	if err != nil {
		t.Fatal(err)
	}
	gate := filepath.Join(t.TempDir(), "looping")
	first := interpreterPid(t, c)
	killOnCleanup(t, func() []int { return []int{first} })
	abandon(t, ts.URL, map[string]any{"code": fmt.Sprintf("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nopen(%q, 'w').close()\nwhile True: time.sleep(0.05)", gate)}, gate)
	// The abandoned run holds the context until its kernel is killed.
	c.lock <- struct{}{}
	<-c.lock
	resp := post(t, ts.URL+"/contexts/"+c.ID+"/restart", nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("restart: %s", resp.Status)
	}
	lines := executeOrHang(t, ts.URL, map[string]any{"code": "1 + 1"}, "the run after the restart")
	if r := ofType(lines, "result"); len(r) != 1 || r[0].str("text") != "2" || len(ofType(lines, "error")) > 0 {
		t.Fatalf("run after the restart: %v", lines)
	}
}

// A closed server starts no interpreter: a run that was waiting for its
// context when the server closed used to start a new kernel in place of
// the one Close had killed, and that kernel outlived the server.
func TestClosedRunnerStartsNoKernel(t *testing.T) {
	requireKernel(t)
	spec, err := jupyter.LoadSpec(jupyter.DefaultKernelDirs, "python3")
	if err != nil {
		t.Fatal(err)
	}
	r, err := startKernelRunner(t.Context(), spec, "", jupyter.Options{Dir: t.TempDir()}, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	first := r.k.Pid()
	killOnCleanup(t, func() []int {
		r.mu.Lock()
		defer r.mu.Unlock()
		return []int{first, r.k.Pid()}
	})
	if err := r.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	var lines collect
	_ = r.Execute(t.Context(), "1", nil, &lines)
	r.mu.Lock()
	pid := r.k.Pid()
	r.mu.Unlock()
	if pid != first {
		t.Fatalf("a closed context started kernel %d", pid)
	}
	if len(lines) == 0 {
		t.Fatal("a run on a closed context reported nothing")
	}
}

// collect is an emitter that keeps what a run emits.
type collect []any

func (c *collect) emit(l any) { *c = append(*c, l) }

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
