package codeinterp

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/sbxdev/sbx/internal/testenv"
)

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
	other := testenv.StartAtPid(t, pid, true)
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
