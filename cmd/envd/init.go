package main

import (
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// PID 1 duty. `envd --init` is the sandbox's init and its agent in one
// process: the server runs in it, and it reaps every process re-parented
// to it. It used to start the server as a second copy of itself, which
// cost every sandbox start about 3 ms of CPU and every sandbox 1.4 MiB.
// As init it gets SIGTERM and SIGINT itself (a handler is installed, so
// the kernel delivers them to a namespace's PID 1), and SIGUSR1/SIGUSR2
// for checkpoints (checkpoint.go).

// orphanReaper makes this process reap orphans: it subscribes to SIGCHLD
// and calls reap on each, until stop is called. Subscribe before the
// server starts anything so no SIGCHLD is lost.
func orphanReaper(reap func() int) (stop func()) {
	// As PID 1 orphans come to us anyway; the subreaper flag gives the same
	// duty when envd --init runs under another init (tests, debugging).
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGCHLD)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-sigs:
				// One SIGCHLD may stand for many exits: reap takes all.
				reap()
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(sigs); close(done) }
}
