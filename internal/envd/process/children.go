package process

import (
	"bytes"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// children lets the manager and an orphan reaper share one process. envd
// runs as the sandbox's PID 1 and serves from that same process (a second
// Go process per sandbox cost about 3 ms of CPU and 1.4 MiB at every
// start), so it must reap the orphans re-parented to it without ever
// waiting for a process the manager waits for itself (exec.Cmd.Wait):
// a wait4(-1) would take that exit status from the manager.
//
// The manager forks under the read lock and records the child before
// letting go, so the reaper, which holds the write lock, never sees a
// child of the manager that is not yet recorded.
type children struct {
	mu    sync.RWMutex     // read: forking and recording a child; write: reaping
	ownMu sync.Mutex       // starters record their children side by side
	own   map[int]struct{} // started by the manager and not yet waited for
}

func newChildren() *children { return &children{own: make(map[int]struct{})} }

// forking holds off the reaper until the returned func runs; the caller
// records its child with add before that.
func (c *children) forking() (done func()) {
	c.mu.RLock()
	return c.mu.RUnlock
}

// add records pid as waited for by the manager. Called between forking
// and its done.
func (c *children) add(pid int) {
	c.ownMu.Lock()
	c.own[pid] = struct{}{}
	c.ownMu.Unlock()
}

// waited forgets pid once the manager has waited for it.
func (c *children) waited(pid int) {
	c.ownMu.Lock()
	delete(c.own, pid)
	c.ownMu.Unlock()
}

// reap waits for every exited child of this process the manager does
// not own, and returns how many it reaped.
func (c *children) reap() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	// waitid with WNOWAIT says whether any child has exited without
	// reaping it; most SIGCHLDs are the manager's own processes, which
	// its waits have already taken.
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil); err != nil || info.Signo == 0 {
		return 0
	}
	// Which ones: the kernel does not list a process's children here
	// (no CONFIG_PROC_CHILDREN), so read them from /proc. A sandbox
	// holds few processes.
	n := 0
	for _, pid := range zombieChildren(os.Getpid()) {
		c.ownMu.Lock()
		_, mine := c.own[pid]
		c.ownMu.Unlock()
		if mine {
			continue
		}
		var ws unix.WaitStatus
		if got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err == nil && got == pid {
			n++
		}
	}
	return n
}

// zombieChildren lists the exited, unreaped children of parent in /proc.
func zombieChildren(parent int) []int {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	var out []int
	buf := make([]byte, 512)
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid == parent {
			continue
		}
		state, ppid, ok := statOf(name, buf)
		if ok && state == 'Z' && ppid == parent {
			out = append(out, pid)
		}
	}
	return out
}

// statOf reads the state and parent pid from /proc/<pid>/stat. The
// command name in parentheses may hold spaces and parentheses: the fields
// start after the last ')'.
func statOf(pid string, buf []byte) (state byte, ppid int, ok bool) {
	f, err := os.Open("/proc/" + pid + "/stat")
	if err != nil {
		return 0, 0, false
	}
	n, _ := f.Read(buf)
	f.Close()
	b := buf[:n]
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	fields := bytes.Fields(b[i+1:])
	if len(fields) < 2 || len(fields[0]) != 1 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(string(fields[1]))
	return fields[0][0], ppid, err == nil
}
