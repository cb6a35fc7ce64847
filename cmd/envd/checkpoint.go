package main

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// A gVisor sandbox cannot be checkpointed while envd holds its host socket
// (a unix socket bound on the host through runsc --host-uds=create). runsc
// runs `envd --checkpoint-hook` inside the sandbox before saving and after
// restoring; the hook signals PID 1 (envd --init), which forwards to the
// server: SIGUSR1 closes the socket, SIGUSR2 opens it again.

// hostSocketSignals turns SIGUSR1/SIGUSR2 into close/open requests.
func hostSocketSignals() <-chan bool {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
	out := make(chan bool, 4)
	go func() {
		for sig := range sigs {
			out <- sig == syscall.SIGUSR2
		}
	}()
	return out
}

// hookWait bounds how long the hook waits for envd; runsc's own timeout
// for the hook is longer, so a stuck envd fails the checkpoint here with a
// message instead of there.
const hookWait = 10 * time.Second

// runCheckpointHook asks envd to close (mode "save") or reopen ("restore",
// "resume") its socket and waits until it has. It returns the exit code.
func runCheckpointHook(log *slog.Logger, socket, mode string) int {
	if socket == "" {
		log.Error("checkpoint hook: --socket is required")
		return 2
	}
	var sig syscall.Signal
	var done func() bool
	switch mode {
	case "save":
		sig = syscall.SIGUSR1
		done = func() bool { _, err := os.Stat(socket); return errors.Is(err, os.ErrNotExist) }
	case "restore", "resume":
		sig = syscall.SIGUSR2
		done = func() bool {
			c, err := net.Dial("unix", socket)
			if err == nil {
				c.Close()
			}
			return err == nil
		}
	default:
		log.Error("checkpoint hook: GVISOR_SAVE_RESTORE_AUTO_EXEC_MODE must be save, restore or resume", "mode", mode)
		return 2
	}
	if err := syscall.Kill(1, sig); err != nil {
		log.Error("checkpoint hook: signal envd (PID 1)", "err", err)
		return 1
	}
	deadline := time.Now().Add(hookWait)
	for !done() {
		if time.Now().After(deadline) {
			log.Error("checkpoint hook: envd did not act on its socket in time", "mode", mode, "socket", socket)
			return 1
		}
		time.Sleep(time.Millisecond)
	}
	return 0
}
