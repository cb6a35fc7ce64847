package codeinterp

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// startAtPid starts `sleep 300` in a process group of its own as process
// pid, by setting the kernel's last pid just below it (root only); nil if
// the number was never free (another fork, or a process holding it).
func startAtPid(t *testing.T, pid int) *exec.Cmd {
	t.Helper()
	for range 20 {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Skipf("cannot choose the next pid (needs root): %v", err)
		}
		cmd := exec.Command("sleep", "300")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if cmd.Process.Pid == pid {
			return cmd
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	return nil
}

// A REPL process that died is killed again when its context is closed or
// restarted, to end what is left of its process group. Its group was
// signalled by number: once the process was reaped and its group had
// emptied, the number could name a new group (another context's
// interpreter is a group leader too), and that group was killed. The dead
// process must keep its number until it is let go.
func TestKillOfADeadREPLMissesAGroupThatReusedItsPid(t *testing.T) {
	p, err := startRepl(exec.Command("cat"), "cat", nil)
	if err != nil {
		t.Fatal(err)
	}
	pid := p.cmd.Process.Pid
	p.stdin.Close() // cat ends
	<-p.dead
	other := startAtPid(t, pid)
	if other == nil {
		// The number was held: by the dead process, as it must be.
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil || !strings.Contains(string(b), ") Z ") {
			t.Skipf("pid %d was taken by another fork every time", pid)
		}
		p.kill()
		return
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	p.kill()
	// Signals are delivered in order: if the kill reached it, it ends by
	// SIGKILL, not by the SIGTERM sent after.
	_ = other.Process.Signal(syscall.SIGTERM)
	err = other.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("wait: %v", err)
	}
	if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("the group that reused the dead REPL's pid ended by %v, not by the test's SIGTERM", ws)
	}
}
