package jupyter

import (
	"errors"
	"os/exec"
	"syscall"
	"testing"

	"github.com/sbxdev/sbx/internal/testenv"
)

// An interpreter may be signalled after it was reaped (a context closed
// or restarted after its process died). Its pid may then name another
// process, in another group: signalling that pid on its own killed it.
func TestSignalGroupMissesAProcessThatReusedThePid(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			old := exec.Command("sleep", "300")
			old.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			if err := old.Start(); err != nil {
				t.Fatal(err)
			}
			_ = old.Process.Kill()
			_ = old.Wait() // reaped: its pid is free
			other := testenv.StartAtPid(t, old.Process.Pid, false)
			if other == nil {
				t.Skip("the pid was always taken by another fork")
			}
			t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
			if err := SignalGroup(old.Process, sig); err == nil {
				t.Errorf("signalling a reaped interpreter reported success")
			}
			// Signals are delivered in order: if ours reached it, it ends
			// by sig, not by the SIGTERM sent after.
			endsByTestsSIGTERM(t, other)
		})
	}
}

// A kernel that died is closed (or interrupted) later, when its context
// restarts or closes. Its number may lead another process's group by
// then: a kill of the kernel's group by number hit that group.
func TestDeadKernelsGroupIsNotSignalledAfterItsPidWasReused(t *testing.T) {
	k := startKernel(t)
	pid := k.cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-k.Dead()
	other := testenv.StartAtPid(t, pid, true)
	if other == nil {
		t.Skip("the pid was always taken by another fork")
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	if err := k.Interrupt(t.Context()); err == nil {
		t.Errorf("interrupting a dead kernel reported success")
	}
	k.Kill()
	endsByTestsSIGTERM(t, other)
}

// endsByTestsSIGTERM sends the process that reused a number SIGTERM and
// fails unless that is what ended it: signals are delivered in order, so
// one the code under test sent it would have ended it first.
func endsByTestsSIGTERM(t *testing.T, other *exec.Cmd) {
	t.Helper()
	_ = other.Process.Signal(syscall.SIGTERM)
	err := other.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("wait: %v", err)
	}
	if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("the process that reused the pid ended by %v, not by the test's SIGTERM", ws)
	}
}
