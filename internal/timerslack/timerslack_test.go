package timerslack

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestStatStartTime(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, stat string
		want       uint64
		ok         bool
	}{
		{"plain", "12 (sbx) S 1 12 12 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 9 0 4242 100000 300", 4242, true},
		{"comm with spaces and parens", "12 (a b) c)) S 1 12 12 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 9 0 77 100000 300", 77, true},
		{"short", "12 (sbx) S 1 12", 0, false},
		{"no comm", "garbage", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := statStartTime(tt.stat)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("statStartTime(%q) = %d, %v; want %d, %v", tt.stat, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestSysmonThread(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	task := func(tid, start string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(dir, tid), 0o755); err != nil {
			t.Fatal(err)
		}
		stat := tid + " (sbx) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 9 0 " + start + " 0 0"
		if err := os.WriteFile(filepath.Join(dir, tid, "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	task("100", "5") // the main thread
	task("104", "9")
	task("102", "5")
	task("101", "5")
	task("30", "20") // after a PID wrap-around: lower ID, started later
	got, err := sysmonThread(dir, 100)
	if err != nil || got != 101 {
		t.Fatalf("sysmonThread = %d, %v; want 101", got, err)
	}
	if _, err := sysmonThread(t.TempDir(), 100); err == nil {
		t.Fatal("no threads: want an error")
	}
}

// The live process: the runtime's sysmon sleeps in nanosleep or futex,
// never runs Go code, so its thread is never the test's.
func TestSysmonThreadLive(t *testing.T) {
	t.Parallel()
	tid, err := sysmonThread("/proc/self/task", os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if tid == os.Getpid() {
		t.Fatalf("sysmonThread picked the main thread %d", tid)
	}
}

// A thread the runtime made from sysmon carries sysmon's slack, and a
// process forked from it would too: Default gives the forking thread the
// process's default, so a sandbox started through it never sleeps longer
// than it asked.
func TestDefaultGivesChildrenTheDefault(t *testing.T) {
	def, err := readSlack(os.Getpid())
	if err != nil {
		t.Skipf("no /proc/<pid>/timerslack_ns here: %v", err)
	}
	RelaxSysmon(slog.New(slog.DiscardHandler))
	tid, err := sysmonThread("/proc/self/task", os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := readSlack(tid); v != SysmonSlack {
		t.Fatalf("sysmon thread %d has slack %d, want %d", tid, v, SysmonSlack)
	}
	childSlack := func() string {
		out, err := exec.Command("cat", "/proc/self/timerslack_ns").Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	// This goroutine's thread stands for one made from sysmon.
	goruntime.LockOSThread()
	defer goruntime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, SysmonSlack, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	if got := childSlack(); got != strconv.Itoa(SysmonSlack) {
		t.Fatalf("without Default a child got slack %s; the test expects sysmon's %d to leak", got, SysmonSlack)
	}
	var got string
	_ = Default(func() error { got = childSlack(); return nil })
	if got != strconv.Itoa(def) {
		t.Fatalf("child started through Default has slack %s, want the default %d", got, def)
	}
}
