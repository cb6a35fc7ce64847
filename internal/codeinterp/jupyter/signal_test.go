package jupyter

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
)

// startAtPid starts `sleep 300` as the process numbered pid, by setting
// the kernel's last pid just below it (root only); nil if another fork
// took the number first every time. attr, if given, is the sleep's.
func startAtPid(t *testing.T, pid int, attr ...*syscall.SysProcAttr) *exec.Cmd {
	t.Helper()
	for range 50 {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Skipf("cannot choose the next pid (needs root): %v", err)
		}
		cmd := exec.Command("sleep", "300")
		if len(attr) > 0 {
			cmd.SysProcAttr = attr[0]
		}
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
			other := startAtPid(t, old.Process.Pid)
			if other == nil {
				t.Skip("the pid was always taken by another fork")
			}
			t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
			if err := SignalGroup(old.Process, sig); err == nil {
				t.Errorf("signalling a reaped interpreter reported success")
			}
			// Signals are delivered in order: if ours reached it, it ends
			// by sig, not by the SIGTERM sent after.
			_ = other.Process.Signal(syscall.SIGTERM)
			err := other.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("wait: %v", err)
			}
			if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
				t.Fatalf("the process that reused the pid ended by %v, not by the test's SIGTERM", ws)
			}
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
	other := startAtPid(t, pid, &syscall.SysProcAttr{Setpgid: true})
	if other == nil {
		t.Skip("the pid was always taken by another fork")
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	if err := k.Interrupt(t.Context()); err == nil {
		t.Errorf("interrupting a dead kernel reported success")
	}
	k.Kill()
	_ = other.Process.Signal(syscall.SIGTERM)
	err := other.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("wait: %v", err)
	}
	if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("the group that reused the dead kernel's pid ended by %v, not by the test's SIGTERM", ws)
	}
}
