package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/agentauth"
)

// The sandbox's agent key (internal/agentauth) reaches envd in the init
// process's environment, the only channel an OCI runtime offers into a
// container that the sandbox's processes do not share. From there it must
// never be readable by them, root included (which lacks CAP_SYS_PTRACE):
//
//   - envd makes itself non-dumpable, which closes its
//     /proc/<pid>/{environ,mem,fd,maps} to every process without
//     CAP_SYS_PTRACE, right after scrubbing its environment and before
//     any other process of the sandbox exists;
//   - it removes the key from its environment and overwrites it in the
//     initial environment block (what /proc/1/environ shows);
//   - envd run by something else than the host may get the key over a
//     descriptor instead (--agent-key-fd), never in an environment;
//   - processes envd starts get an environment built from scratch
//     (internal/envd/process), so none inherits it.

// nonDumpable makes the calling process non-dumpable. It is reset by
// execve, so every process that holds the key calls it itself.
func nonDumpable() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	return nil
}

// takeKeyFromEnv reads the agent key from init's environment and removes
// every trace of it there. ok is false when the host gave none.
func takeKeyFromEnv() (k agentauth.Key, ok bool, err error) {
	v, ok := os.LookupEnv(agentauth.EnvVar)
	if !ok {
		return k, false, nil
	}
	_ = os.Unsetenv(agentauth.EnvVar)
	scrubInitialEnv(agentauth.EnvVar)
	k, err = agentauth.ParseKey(v)
	if err != nil {
		return k, false, fmt.Errorf("%s: %w", agentauth.EnvVar, err)
	}
	return k, true, nil
}

// scrubInitialEnv overwrites the value of name in the environment block
// the kernel set up at exec (env_start..env_end in /proc/self/stat), which
// /proc/<pid>/environ reads and which Go's os.Unsetenv leaves alone. It is
// best effort: non-dumpability is what keeps others out.
func scrubInitialEnv(name string) {
	start, end, err := envBlock()
	if err != nil || end <= start || end-start > 1<<20 {
		return
	}
	mem, err := os.OpenFile("/proc/self/mem", os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer mem.Close()
	buf := make([]byte, end-start)
	if _, err := mem.ReadAt(buf, int64(start)); err != nil {
		return
	}
	prefix := []byte(name + "=")
	changed := false
	for i := 0; i < len(buf); {
		j := bytes.IndexByte(buf[i:], 0)
		if j < 0 {
			j = len(buf) - i
		}
		if bytes.HasPrefix(buf[i:i+j], prefix) {
			clear(buf[i+len(prefix) : i+j])
			changed = true
		}
		i += j + 1
	}
	if changed {
		_, _ = mem.WriteAt(buf, int64(start))
	}
}

// envBlock reads env_start and env_end (fields 50 and 51) of /proc/self/stat.
func envBlock() (start, end uint64, err error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, errors.New("malformed /proc/self/stat")
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3
	if len(f) < 49 {
		return 0, 0, errors.New("/proc/self/stat has no env_start/env_end")
	}
	if start, err = strconv.ParseUint(f[47], 10, 64); err != nil {
		return 0, 0, err
	}
	end, err = strconv.ParseUint(f[48], 10, 64)
	return start, end, err
}

// readKeyFrom reads the key from descriptor fd and closes it.
func readKeyFrom(fd int) (agentauth.Key, error) {
	var k agentauth.Key
	f := os.NewFile(uintptr(fd), "agent-key")
	if f == nil {
		return k, fmt.Errorf("--agent-key-fd %d is not an open descriptor", fd)
	}
	defer f.Close()
	if _, err := io.ReadFull(f, k[:]); err != nil {
		return k, fmt.Errorf("read the agent key from descriptor %d: %w", fd, err)
	}
	return k, nil
}
