package codeinterp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A cell that leaves a process of its own session holding the runner's
// stdout and stderr, and then kills the runner, must still end: the
// server used to wait for those pipes to close before it saw the runner's
// death, so the run never returned (not even when the client went away),
// and the context's next run and its restart waited behind it for good.
func TestRunnerDeathWithLingeringOutputHolder(t *testing.T) {
	s, ts := newTestServer(t, Config{DefaultLanguages: []string{"python"}})
	pidFile := filepath.Join(t.TempDir(), "holder.pid")
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	code := fmt.Sprintf("import os, subprocess\n"+
		"p = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"+
		"open(%q, 'w').write(str(p.pid))\n"+
		"os.kill(os.getpid(), 9)", pidFile)
	type result struct{ lines []line }
	done := make(chan result, 1)
	go func() { done <- result{execute(t, ts.URL, map[string]any{"code": code})} }()
	select {
	case r := <-done:
		if e := ofType(r.lines, "error"); len(e) != 1 || e[0].str("name") != "UnexpectedEndOfExecution" {
			t.Fatalf("run that killed its runner: %v", r.lines)
		}
	case <-time.After(60 * time.Second): // a hang, not a slow run
		t.Fatal("the run whose runner died never ended")
	}
	if res := ofType(execute(t, ts.URL, map[string]any{"code": "1 + 1"}), "result"); len(res) != 1 || res[0].str("text") != "2" {
		t.Fatalf("next run: %v", res)
	}
	_ = s
}

// A cell may move its runner out of the process group the server made for
// it (setpgid to a group of its own making, in the same session) and then
// ignore SIGINT and never end. Signals sent to the old group reached
// nobody: the run did not end when its client went away, and the
// context's next run waited behind it for good. The runner itself must
// still be interrupted and, 5 s on, killed.
func TestRunnerThatLeftItsProcessGroupIsStillStopped(t *testing.T) {
	_, ts := newTestServer(t, Config{DefaultLanguages: []string{"python"}})
	pidFile := filepath.Join(t.TempDir(), "group.pid")
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	code := fmt.Sprintf("import os, signal, subprocess\n"+
		"p = subprocess.Popen(['sleep', '300'], process_group=0)\n"+
		"open(%q, 'w').write(str(p.pid))\n"+
		"os.setpgid(0, p.pid)\n"+
		"signal.signal(signal.SIGINT, signal.SIG_IGN)\n"+
		"import time\n"+
		"while True: time.sleep(0.05)", pidFile)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	b, _ := json.Marshal(map[string]any{"code": code})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/execute", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body) // until the client gives up
		resp.Body.Close()
	}
	// The next run is told the runner was killed (its code is not run;
	// see TestAbandonedCellIgnoringSIGINTIsKilled); the one after runs.
	for i, want := range []string{"ContextRestarted", "2"} {
		done := make(chan []line, 1)
		go func() { done <- execute(t, ts.URL, map[string]any{"code": "1 + 1"}) }()
		select {
		case lines := <-done:
			e, res := ofType(lines, "error"), ofType(lines, "result")
			if ok := (i == 0 && len(e) == 1 && e[0].str("name") == want) || (i == 1 && len(res) == 1 && res[0].str("text") == want); !ok {
				t.Fatalf("run %d after the abandoned one: %v", i, lines)
			}
		case <-time.After(60 * time.Second): // a hang, not a slow run
			t.Fatal("the context's next run never started: the abandoned cell still holds it")
		}
	}
}

// A runner that dies between two runs, after a thread of its own wrote
// more frames than the side channel holds, must be replaced by the next
// run but one: its side pump was stuck on a channel nobody read, so the
// death was never reported, every later run failed to write its request
// (the pipe's reader gone) and said the runner exited, for good.
func TestRunnerDeathBetweenRunsWithPendingFrames(t *testing.T) {
	_, ts := newTestServer(t, Config{DefaultLanguages: []string{"python"}})
	pidFile := filepath.Join(t.TempDir(), "runner.pid")
	code := fmt.Sprintf("import os, threading, time\n"+
		"open(%q, 'w').write(str(os.getpid()))\n"+
		"def f():\n"+
		"    time.sleep(0.3)\n"+
		"    for i in range(50): print(i)\n"+
		"    os._exit(3)\n"+
		"threading.Thread(target=f).start()", pidFile)
	execute(t, ts.URL, map[string]any{"code": code})
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err != nil || strings.Contains(string(b), ") Z ") {
			break // exited (left unreaped until the context lets it go)
		}
		if time.Now().After(deadline) {
			t.Fatal("the runner never exited")
		}
	}
	var last []line
	for range 3 {
		last = execute(t, ts.URL, map[string]any{"code": "1 + 1"})
		if res := ofType(last, "result"); len(res) == 1 && res[0].str("text") == "2" {
			return
		}
	}
	t.Fatalf("the context never got a new runner; last run: %v", last)
}
