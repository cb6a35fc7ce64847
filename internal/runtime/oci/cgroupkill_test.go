package oci

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/testenv"
)

func TestInCgroup(t *testing.T) {
	v1 := "12:pids:/sbx/abc\n11:cpu,cpuacct:/sbx/abc\n1:name=systemd:/\n"
	for _, tt := range []struct {
		name, file string
		unified    bool
		rel        string
		want       bool
	}{
		{"v2 member", "0::/sbx/abc\n", true, "/sbx/abc", true},
		{"v2 below", "0::/sbx/abc/inner\n", true, "/sbx/abc", true},
		{"v2 other sandbox with the id as prefix", "0::/sbx/abcd\n", true, "/sbx/abc", false},
		{"v2 host", "0::/system.slice/ssh.service\n", true, "/sbx/abc", false},
		{"v1 member", v1, false, "/sbx/abc", true},
		{"v1 host", "12:pids:/\n11:cpu,cpuacct:/sbx/abc\n", false, "/sbx/abc", false},
		{"v1 file read as v2", v1, true, "/sbx/abc", false},
		{"empty", "", false, "/sbx/abc", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := inCgroup([]byte(tt.file), tt.unified, tt.rel); got != tt.want {
				t.Errorf("inCgroup(%q, %v, %s) = %v, want %v", tt.file, tt.unified, tt.rel, got, tt.want)
			}
		})
	}
}

// killCgroup kills by the numbers in cgroup.procs. A number whose process
// exited after the read may already belong to a host process: that one
// must live. The sandbox's own processes must die.
func TestKillMemberSparesAProcessOutsideTheCgroup(t *testing.T) {
	testenv.Require(t, testenv.Root)
	layout, err := detectCgroups()
	if err != nil {
		t.Fatal(err)
	}
	ctl := "pids"
	if layout.unified {
		ctl = ""
	}
	rel := "/sbx-killtest-" + strconv.Itoa(os.Getpid())
	dir := filepath.Join(cgroupRoot, ctl, rel)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("make a test cgroup: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Rmdir(dir) })

	start := func() *exec.Cmd {
		cmd := exec.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() }) // exited reaps it
		return cmd
	}
	host, member := start(), start()
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(member.Process.Pid)), 0); err != nil {
		t.Fatalf("move a process into the test cgroup: %v", err)
	}
	// The host process's number as if read from the sandbox's cgroup.procs.
	killMember(host.Process.Pid, layout.unified, rel)
	killMember(member.Process.Pid, layout.unified, rel)
	if err := exited(member, 5*time.Second); err != nil {
		t.Errorf("the cgroup's process: %v", err)
	}
	// A SIGKILL ends a sleep within microseconds: half a second alive
	// means it was not sent (a zombie still answers signal 0).
	if err := exited(host, 500*time.Millisecond); err == nil {
		t.Errorf("the host process whose number was listed was killed")
	}
}

func exited(cmd *exec.Cmd, within time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil
		}
		return fmt.Errorf("wait: %v", err)
	case <-time.After(within):
		return fmt.Errorf("still running after %s", within)
	}
}
