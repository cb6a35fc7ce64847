// Package timerslack sets the timer slack of the server's threads: a long
// one for the Go runtime's sysmon thread (RelaxSysmon), and the process's
// default for the thread that starts a sandbox (Default), whose processes
// inherit it.
package timerslack

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// SysmonSlack is the timer slack given to the Go runtime's sysmon thread.
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
const SysmonSlack = 1_000_000 // ns

// defaultSlack is the process's slack before RelaxSysmon: what the main
// thread has (the kernel's 50 µs unless sbx was started with another); 0
// until RelaxSysmon changed sysmon's.
var defaultSlack atomic.Int64

// RelaxSysmon sets SysmonSlack on the sysmon thread. The runtime starts
// that thread first of all, before any package's init, so it is the
// oldest thread after the main one. Best effort: the server runs the same
// without it.
//
// A thread inherits the slack of the thread that made it, and the runtime
// makes threads from sysmon too (when it hands a P over and no idle thread
// is left): those keep 1 ms, so Go timers that fire on them may be up to
// 1 ms late, and short helper processes forked from them (crun delete,
// iptables) inherit it. Sandboxes must not: their processes' sleeps
// would end up to 1 ms late. Their start goes through Default.
func RelaxSysmon(log *slog.Logger) {
	pid := os.Getpid()
	def, err := readSlack(pid)
	if err == nil {
		var tid int
		if tid, err = sysmonThread("/proc/self/task", pid); err == nil {
			if err = writeSlack(tid, SysmonSlack); err == nil {
				defaultSlack.Store(int64(def))
				log.Debug("sysmon timer slack", "tid", tid, "ns", SysmonSlack)
				return
			}
		}
	}
	log.Debug("sysmon timer slack left as is", "err", err)
}

// Default runs fn on an OS thread of its own whose timer slack is the
// process's default, so that a process fn forks (crun, and through it a
// sandbox) inherits that and not sysmon's. fn must fork from the
// goroutine it is called on, not from one it starts (os/exec's Start and
// Run fork on the caller's).
func Default(fn func() error) error {
	def := defaultSlack.Load()
	if def == 0 { // RelaxSysmon did not run or failed: every thread has it
		return fn()
	}
	goruntime.LockOSThread()
	defer goruntime.UnlockOSThread()
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(def), 0, 0, 0)
	return fn()
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
