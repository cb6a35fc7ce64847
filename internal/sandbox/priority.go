package sandbox

import (
	"bytes"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// poolNice is the scheduling priority of a warm pool's background start
// (pool.bgStart): the server's own work for it and the runtime it forks
// run below the creates, commands and kills users wait for. The sandbox's
// processes inherit it; its runtime.Prioritizer resets them when the
// sandbox is claimed.
const poolNice = reclaimNice

// lowerThread lowers the priority of OS thread tid (Linux sets nice per
// thread; processes it forks inherit it).
func lowerThread(tid int) {
	_ = unix.Setpriority(unix.PRIO_PROCESS, tid, poolNice)
}

// raiseThread gives OS thread tid of this process, and the processes it
// forked that still run (the runtime starting a sandbox), normal priority.
func raiseThread(tid int) {
	_ = unix.Setpriority(unix.PRIO_PROCESS, tid, 0)
	b, _ := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/children", tid))
	for _, f := range bytes.Fields(b) {
		if pid, err := strconv.Atoi(string(f)); err == nil {
			_ = unix.Setpriority(unix.PRIO_PROCESS, pid, 0)
		}
	}
}
