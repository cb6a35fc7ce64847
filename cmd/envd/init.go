package main

import (
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// runInit is PID 1 duty: start envd itself (without --init) as the server
// child, reap every process that gets re-parented to us, forward SIGTERM,
// SIGINT, SIGUSR1 and SIGUSR2 to the server, and exit with its status. It returns the exit
// code.
func runInit(log *slog.Logger, args []string) int {
	// Scrub the agent key from the environment, then turn non-dumpable
	// (in this order: a non-dumpable process's /proc/self/mem belongs to
	// root). No other process of the sandbox exists yet (agentkey.go).
	key, haveKey, err := takeKeyFromEnv()
	if err == nil {
		err = nonDumpable()
	}
	if err != nil {
		log.Error("envd init", "err", err)
		return 1
	}
	// Subscribe before starting the child so no SIGCHLD is lost.
	// As PID 1 orphans come to us anyway; the subreaper flag gives the same
	// duty when envd --init runs under another init (tests, debugging).
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	sigs := make(chan os.Signal, 16)
	// SIGUSR1/SIGUSR2 close and reopen the server's host socket (checkpoint.go).
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2)

	self, err := os.Executable()
	if err != nil {
		self = "/proc/self/exe"
	}
	cmd := exec.Command(self, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	var keyPipe *os.File
	if haveKey {
		r, w, err := os.Pipe()
		if err != nil {
			log.Error("start envd server: agent key pipe", "err", err)
			return 1
		}
		cmd.ExtraFiles = []*os.File{r} // keyFD in the child
		cmd.Args = append(cmd.Args, "--agent-key-fd", strconv.Itoa(keyFD))
		defer r.Close()
		keyPipe = w
	}
	if err := cmd.Start(); err != nil {
		log.Error("start envd server", "err", err)
		return 1
	}
	if keyPipe != nil {
		_, err := keyPipe.Write(key[:])
		keyPipe.Close()
		clear(key[:])
		if err != nil {
			log.Error("hand the agent key to the envd server", "err", err)
			_ = cmd.Process.Kill()
			return 1
		}
	}
	child := cmd.Process.Pid
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			_ = syscall.Kill(child, sig.(syscall.Signal))
			continue
		}
		// One SIGCHLD may stand for many exits: reap until none is left.
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
			if pid == child {
				return exitCode(ws)
			}
		}
	}
	return 1
}

// exitCode maps a wait status to a shell-style exit code.
func exitCode(ws syscall.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	default:
		return 1
	}
}
