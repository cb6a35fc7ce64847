package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// sysmonSlack is the timer slack given to the Go runtime's sysmon thread.
//
// Why: sysmon polls in usleep(20µs) steps for at least a millisecond
// every time the server wakes from idle into a syscall, and for as long
// as it keeps handing Ps off from blocking syscalls; the server's work
// (ext4, cgroup, mount, netlink, crun's waitid) is nearly all blocking
// syscalls, so under a create/kill loop sysmon stayed in its 20µs mode:
// in perf, its nanosleep wake-ups were the largest single item of the
// server's own CPU (about 2 ms per create → echo → kill on the 2-core VM,
// more than the SQLite writes). With 1 ms of slack the kernel batches
// those wake-ups onto its other timers. What sysmon does is not lost,
// only done up to 1 ms later: taking a P from a goroutine stuck in a
// syscall (the other P keeps running meanwhile), the 10 ms preemption
// check and its netpoll fallback.
const sysmonSlack = 1_000_000 // ns

// relaxSysmon sets sysmonSlack on the sysmon thread, until ctx ends. The
// runtime starts that thread first of all, before any package's init, so
// it is the oldest thread after the main one. Best effort: the server runs
// the same without it.
//
// A thread inherits the slack of the thread that made it, and a process
// that of the thread that forked it: crun, and through it every sandbox,
// must not get sysmon's. The runtime makes a thread from sysmon when it
// hands a P over and no idle thread is left, so relaxSysmon first makes
// spareThreads idle ones (threads live on in the runtime's idle list),
// then resets any thread that appears later and is not sysmon to the
// default slack, within a second of its birth.
func relaxSysmon(ctx context.Context, log *slog.Logger) {
	pid := os.Getpid()
	def, err := readSlack(pid)
	if err == nil {
		spareThreads(32)
		var tid int
		if tid, err = sysmonThread("/proc/self/task", pid); err == nil {
			if err = writeSlack(tid, sysmonSlack); err == nil {
				log.Debug("sysmon timer slack", "tid", tid, "ns", sysmonSlack)
				go keepDefaultSlack(ctx, tid, def)
				return
			}
		}
	}
	log.Debug("sysmon timer slack left as is", "err", err)
}

// spareThreads leaves n more idle threads in the runtime: n goroutines
// each hold a thread of their own at once, then let go of it.
func spareThreads(n int) {
	var held sync.WaitGroup
	release := make(chan struct{})
	var done sync.WaitGroup
	for range n {
		held.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			goruntime.LockOSThread()
			held.Done()
			<-release
			goruntime.UnlockOSThread()
		}()
	}
	held.Wait()
	close(release)
	done.Wait()
}

// keepDefaultSlack puts slack def back on every thread but sysmon whenever
// the process gained threads, checked once a second.
func keepDefaultSlack(ctx context.Context, sysmon, def int) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	seen := 0
	for {
		if n := numThreads(); n != seen {
			seen = n
			ents, _ := os.ReadDir("/proc/self/task")
			for _, e := range ents {
				tid, err := strconv.Atoi(e.Name())
				if err != nil || tid == sysmon {
					continue
				}
				if v, err := readSlack(tid); err == nil && v != def {
					_ = writeSlack(tid, def)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func readSlack(tid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/timerslack_ns", tid))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func writeSlack(tid, ns int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/timerslack_ns", tid), []byte(strconv.Itoa(ns)), 0)
}

// numThreads is field 20 of /proc/self/stat (0 if unreadable).
func numThreads() int {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 18 {
		return 0
	}
	n, _ := strconv.Atoi(f[17])
	return n
}

// sysmonThread returns the first thread started after the main one (pid):
// the earliest start time under taskDir, the lower thread ID on a tie (IDs
// only go down across a PID wrap-around, which start times see).
func sysmonThread(taskDir string, pid int) (int, error) {
	ents, err := os.ReadDir(taskDir)
	if err != nil {
		return 0, err
	}
	best, bestStart := 0, uint64(0)
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil || tid == pid {
			continue
		}
		b, err := os.ReadFile(filepath.Join(taskDir, e.Name(), "stat"))
		if err != nil {
			continue // the thread exited
		}
		start, ok := statStartTime(string(b))
		if !ok {
			continue
		}
		if best == 0 || start < bestStart || (start == bestStart && tid < best) {
			best, bestStart = tid, start
		}
	}
	if best == 0 {
		return 0, fmt.Errorf("no thread but the main one in %s", taskDir)
	}
	return best, nil
}

// statStartTime reads field 22 (starttime) of a /proc stat line; the
// command in field 2 may hold spaces and parentheses, so fields are
// counted from its last ')'.
func statStartTime(stat string) (uint64, bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 20 { // fields 3.. → starttime is the 20th
		return 0, false
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	return v, err == nil
}
