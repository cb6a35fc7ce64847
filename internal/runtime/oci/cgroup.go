package oci

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/runtime"
)

// cgroupDir is the sandbox's cgroup under one v1 controller, or under the
// unified hierarchy when ctl is ignored on a pure cgroup v2 host.
func (d *Driver) cgroupDir(ctl, id string) string {
	if d.cg.unified {
		return filepath.Join(cgroupRoot, cgroupPath(id))
	}
	return filepath.Join(cgroupRoot, ctl, cgroupPath(id))
}

// readFreezer returns THAWED, FREEZING or FROZEN ("" if there is no cgroup).
func (d *Driver) readFreezer(id string) string {
	dir := d.cgroupDir("freezer", id)
	if !d.cg.unified {
		return strings.TrimSpace(readString(filepath.Join(dir, "freezer.state")))
	}
	want := strings.TrimSpace(readString(filepath.Join(dir, "cgroup.freeze")))
	switch {
	case want == "":
		return ""
	case strings.Contains(readString(filepath.Join(dir, "cgroup.events")), "frozen 1"):
		return "FROZEN"
	case want == "1":
		return "FREEZING"
	}
	return "THAWED"
}

func (d *Driver) writeFreezer(id, state string) error {
	dir := d.cgroupDir("freezer", id)
	if !d.cg.unified {
		return os.WriteFile(filepath.Join(dir, "freezer.state"), []byte(state), 0)
	}
	v := "0"
	if state == "FROZEN" {
		v = "1"
	}
	return os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte(v), 0)
}

// killCgroup SIGKILLs whatever is left in the sandbox's cgroup and removes
// the cgroup directories. The runtime normally does both; this covers a
// runtime that lost track of the container.
func (d *Driver) killCgroup(id string) error {
	procs := filepath.Join(d.cgroupDir("pids", id), "cgroup.procs")
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(procs)
		if err != nil || len(bytes.TrimSpace(b)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes of cgroup %s did not die: %s", cgroupPath(id), bytes.Fields(b))
		}
		for _, f := range bytes.Fields(b) {
			if pid, err := strconv.Atoi(string(f)); err == nil {
				killMember(pid, d.cg.unified, cgroupPath(id))
			}
		}
		time.Sleep(time.Millisecond)
	}
	dirs := []string{d.cgroupDir("", id)}
	if !d.cg.unified {
		ctls, _ := os.ReadDir(cgroupRoot)
		dirs = dirs[:0]
		for _, c := range ctls {
			dirs = append(dirs, d.cgroupDir(c.Name(), id))
		}
	}
	for _, dir := range dirs {
		if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
	}
	return nil
}

// Stats reads the cgroup counters and the writable layer's usage.
func (d *Driver) Stats(ctx context.Context, id string) (runtime.Stats, error) {
	var st runtime.Stats
	if err := validateID(id); err != nil {
		return st, err
	}
	p := d.paths(id)
	if _, err := os.Stat(p.dir); err != nil {
		return st, notFound(id)
	}
	if d.cg.unified {
		dir := d.cgroupDir("", id)
		usec := statField(readString(filepath.Join(dir, "cpu.stat")), "usage_usec")
		st.CPUUsage = time.Duration(usec) * time.Microsecond
		st.MemoryBytes = readUint(filepath.Join(dir, "memory.current")) -
			min(statField(readString(filepath.Join(dir, "memory.stat")), "inactive_file"), readUint(filepath.Join(dir, "memory.current")))
		st.MemoryLimit = readUint(filepath.Join(dir, "memory.max")) // "max" reads as 0
		st.Pids = readUint(filepath.Join(dir, "pids.current"))
		st.OOMKills = statField(readString(filepath.Join(dir, "memory.events")), "oom_kill")
		st.PidsLimitHits = statField(readString(filepath.Join(dir, "pids.events")), "max")
	} else {
		st.CPUUsage = time.Duration(readUint(filepath.Join(d.cgroupDir("cpuacct", id), "cpuacct.usage")))
		mem := d.cgroupDir("memory", id)
		usage := readUint(filepath.Join(mem, "memory.usage_in_bytes"))
		// Like docker stats: page cache that can be dropped is not "used".
		inactive := statField(readString(filepath.Join(mem, "memory.stat")), "total_inactive_file")
		st.MemoryBytes = usage - min(inactive, usage)
		if lim := readUint(filepath.Join(mem, "memory.limit_in_bytes")); lim < 1<<62 {
			st.MemoryLimit = lim
		}
		st.Pids = readUint(filepath.Join(d.cgroupDir("pids", id), "pids.current"))
		st.OOMKills = statField(readString(filepath.Join(mem, "memory.oom_control")), "oom_kill")
		st.PidsLimitHits = statField(readString(filepath.Join(d.cgroupDir("pids", id), "pids.events")), "max")
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(p.upperMount(), &fs); err == nil && isMountpoint(p.upperMount()) {
		st.DiskBytes = (fs.Blocks - fs.Bfree) * uint64(fs.Bsize)
	}
	return st, nil
}

func readUint(p string) uint64 {
	v, _ := strconv.ParseUint(strings.TrimSpace(readString(p)), 10, 64)
	return v
}

// statField reads "key value" lines (memory.stat, cpu.stat).
func statField(text, key string) uint64 {
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(line, " ")
		if ok && k == key {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read init pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("bad init pid %q in %s", b, path)
	}
	return pid, nil
}

// procStartTime returns field 22 of /proc/<pid>/stat (start time in clock
// ticks since boot), which tells a live init from a reused PID. A zombie
// counts as gone.
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name may contain spaces and parentheses; fields restart
	// after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, fmt.Errorf("process %d has exited", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// killMember SIGKILLs pid if it is in the cgroup rel (or below it). A pid
// read from cgroup.procs may have exited since and been given to a host
// process, which a kill by number would hit: the pidfd holds one process,
// and its membership is read while the pidfd holds it. Were the number
// reused before the read, the pidfd's process is gone and the signal goes
// nowhere.
func killMember(pid int, unified bool, rel string) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return // gone already
	}
	defer unix.Close(fd)
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil || !inCgroup(b, unified, rel) {
		return
	}
	_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
}

// inCgroup reports whether a /proc/<pid>/cgroup file puts the process in
// rel or below it: in the unified hierarchy, or in v1's pids one (the one
// whose cgroup.procs killCgroup reads).
func inCgroup(procCgroup []byte, unified bool, rel string) bool {
	for _, line := range bytes.Split(procCgroup, []byte("\n")) {
		parts := bytes.SplitN(line, []byte(":"), 3)
		if len(parts) != 3 {
			continue
		}
		ours := string(parts[0]) == "0" && len(parts[1]) == 0
		if !unified {
			ours = slices.Contains(strings.Split(string(parts[1]), ","), "pids")
		}
		if path := string(parts[2]); ours && (path == rel || strings.HasPrefix(path, rel+"/")) {
			return true
		}
	}
	return false
}
