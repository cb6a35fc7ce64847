package process

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/envd/users"
)

// The reaper takes the zombies nobody waits for and leaves the manager's
// own children to the manager, whose exit statuses stay exact even when
// the reaper runs in a loop while they start and end. Not parallel: it
// counts this test process's zombie children.
func TestReapOrphansLeavesManagedChildren(t *testing.T) {
	m := NewManager(slog.New(slog.DiscardHandler))
	u := &users.User{Name: "self", UID: uint32(os.Geteuid()), GID: uint32(os.Getegid()), Home: "/"}

	// A child nobody waits for: it must be reaped, leaving no zombie.
	stray := exec.Command("/bin/true")
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	pid := stray.Process.Pid
	waitZombie(t, pid)
	if n := m.ReapOrphans(); n != 1 {
		t.Errorf("ReapOrphans = %d, want 1", n)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); !os.IsNotExist(err) {
		t.Errorf("stray child %d still in /proc after ReapOrphans", pid)
	}

	// A child recorded as the manager's stays for the manager to wait for,
	// until it is no longer recorded.
	own := exec.Command("/bin/true")
	done := m.children.forking()
	if err := own.Start(); err != nil {
		t.Fatal(err)
	}
	m.children.add(own.Process.Pid)
	done()
	waitZombie(t, own.Process.Pid)
	if n := m.ReapOrphans(); n != 0 {
		t.Errorf("ReapOrphans = %d with only the manager's child exited, want 0", n)
	}
	if err := own.Wait(); err != nil {
		t.Errorf("the manager's wait for its child: %v", err)
	}
	m.children.waited(own.Process.Pid)

	// The manager's children, reaped against: every exit code arrives.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				m.ReapOrphans()
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	for i := range 20 {
		code := i%5 + 1
		p, sub, err := m.start(Spec{Config: Config{Cmd: "/bin/sh", Args: []string{"-c", fmt.Sprintf("exit %d", code)}}, User: u, Env: []string{"PATH=/usr/bin:/bin"}, Dir: "/"})
		if err != nil {
			t.Fatal(err)
		}
		p.unsubscribe(sub)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("process %d never ended", i)
		}
		p.mu.Lock()
		end := p.end
		p.mu.Unlock()
		if end == nil || end.ExitCode != int32(code) || !end.Exited {
			t.Fatalf("process %d ended with %+v, want exit code %d", i, end, code)
		}
	}
}

// waitZombie waits until pid has exited and is not yet reaped.
func waitZombie(t *testing.T, pid int) {
	t.Helper()
	buf := make([]byte, 512)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if state, _, ok := statOf(fmt.Sprint(pid), buf); ok && state == 'Z' {
			return
		}
	}
	t.Fatalf("child %d did not exit", pid)
}
