package envd

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Metrics is the body of GET /metrics (field names as envd's).
type Metrics struct {
	Timestamp   int64   `json:"ts"`
	CPUCount    int     `json:"cpu_count"`
	CPUUsedPct  float64 `json:"cpu_used_pct"`
	MemTotal    uint64  `json:"mem_total"`
	MemUsed     uint64  `json:"mem_used"`
	MemCache    uint64  `json:"mem_cache"`
	MemTotalMiB uint64  `json:"mem_total_mib"`
	MemUsedMiB  uint64  `json:"mem_used_mib"`
	DiskUsed    uint64  `json:"disk_used"`
	DiskTotal   uint64  `json:"disk_total"`
}

// metrics remembers the previous CPU sample: usage is the share of busy
// time since the last scrape (like gopsutil's cpu.Percent(0)), so a scrape
// never has to sleep. There is no sample taken at start-up: most sandboxes
// are never scraped, and every one would pay for reading /proc/stat while
// it starts. The first scrape reports the share since boot.
type metrics struct {
	mu              sync.Mutex
	lastBusy, lastT uint64
}

func newMetrics() *metrics { return &metrics{} }

func (m *metrics) read() (*Metrics, error) {
	out := &Metrics{Timestamp: time.Now().Unix(), CPUCount: runtime.NumCPU()}
	busy, total, err := cpuTimes()
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	if dt := total - m.lastT; total > m.lastT {
		out.CPUUsedPct = float64(busy-m.lastBusy) / float64(dt) * 100
	}
	m.lastBusy, m.lastT = busy, total
	m.mu.Unlock()
	out.CPUUsedPct = float64(int(out.CPUUsedPct*100)) / 100

	mem, err := meminfo()
	if err != nil {
		return nil, err
	}
	out.MemTotal = mem["MemTotal"]
	out.MemCache = mem["Cached"] + mem["Buffers"]
	if avail, ok := mem["MemAvailable"]; ok {
		out.MemUsed = out.MemTotal - avail
	} else {
		out.MemUsed = out.MemTotal - mem["MemFree"] - out.MemCache
	}
	out.MemTotalMiB, out.MemUsedMiB = out.MemTotal>>20, out.MemUsed>>20

	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err == nil {
		out.DiskTotal = st.Blocks * uint64(st.Bsize)
		out.DiskUsed = (st.Blocks - st.Bfree) * uint64(st.Bsize)
	}
	return out, nil
}

// cpuTimes returns busy and total jiffies from the "cpu" line of /proc/stat.
func cpuTimes() (busy, total uint64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("read /proc/stat: %w", err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0, fmt.Errorf("unexpected /proc/stat first line %q", line)
	}
	for i, f := range fields[1:] {
		v, _ := strconv.ParseUint(f, 10, 64)
		if i >= 8 { // guest times are already counted in user/nice
			break
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total, nil
}

// meminfo returns /proc/meminfo in bytes.
func meminfo() (map[string]uint64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return nil, fmt.Errorf("read /proc/meminfo: %w", err)
	}
	defer f.Close()
	out := make(map[string]uint64, 64)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fs := strings.Fields(rest)
		if len(fs) == 0 {
			continue
		}
		v, err := strconv.ParseUint(fs[0], 10, 64)
		if err != nil {
			continue
		}
		if len(fs) > 1 && fs[1] == "kB" {
			v <<= 10
		}
		out[k] = v
	}
	return out, sc.Err()
}
