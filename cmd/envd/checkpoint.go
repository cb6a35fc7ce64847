package main

import (
	"os"
	"os/signal"
	"syscall"
)

// A gVisor sandbox cannot be checkpointed while envd holds its host socket
// (a unix socket bound on the host through runsc --host-uds=create). Before
// a checkpoint the runtime driver sends PID 1 (envd --init) SIGUSR1, which
// it forwards to the server: the server closes the socket (the host waits
// for the file to go). After the restore, SIGUSR2 makes it listen again.

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
