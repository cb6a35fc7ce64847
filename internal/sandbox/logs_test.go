package sandbox

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseLogfmt(t *testing.T) {
	t.Parallel()
	e := parseLogfmt(`time=2026-01-02T03:04:05.5Z level=WARN msg="port \"x\" busy" port=49999 path=/a`)
	if !e.Timestamp.Equal(time.Date(2026, 1, 2, 3, 4, 5, 5e8, time.UTC)) || e.Level != "warn" ||
		e.Message != `port "x" busy` || e.Fields["port"] != "49999" || e.Fields["path"] != "/a" {
		t.Errorf("parsed %+v", e)
	}
	// Not slog's format (a process wrote to envd's output): kept whole.
	raw := `Traceback (most recent call last): x=1`
	if e := parseLogfmt(raw); e.Message != raw || e.Level != "info" || !e.Timestamp.IsZero() {
		t.Errorf("raw line parsed as %+v", e)
	}
}

func TestLogRingSplitsLinesAndBounds(t *testing.T) {
	t.Parallel()
	r := &logRing{partial: map[string]string{}}
	now := time.Now()
	r.output(now, "stdout", "one\ntw")
	r.output(now, "stderr", "oops\n")
	r.output(now, "stdout", "o\n")
	got := r.entries()
	if len(got) != 3 || got[0].Message != "one" || got[1].Message != "oops" || got[1].Level != "error" || got[2].Message != "two" {
		t.Fatalf("entries %+v", got)
	}
	r.output(now, "stdout", strings.Repeat("x", 3*maxLogLine)) // no newline: flushed, cut
	for i := 0; i < maxLogEntries+10; i++ {
		r.output(now, "stdout", "line\n")
	}
	got = r.entries()
	if len(got) != maxLogEntries {
		t.Fatalf("%d entries kept, want the bound %d", len(got), maxLogEntries)
	}
	for _, e := range got {
		if len(e.Message) > maxLogLine+len("…") {
			t.Fatalf("a line of %d bytes was kept", len(e.Message))
		}
	}
}

func TestLogRingBoundsBytes(t *testing.T) {
	t.Parallel()
	r := &logRing{partial: map[string]string{}}
	line := strings.Repeat("x", maxLogLine) + "\n"
	for i := 0; i < maxLogEntries; i++ {
		r.output(time.Now(), "stdout", line)
	}
	got, n := r.entries(), 0
	for _, e := range got {
		n += len(e.Message)
	}
	if n > maxLogBytes || n != r.bytes || len(got) < maxLogBytes/(maxLogLine+1) {
		t.Fatalf("kept %d lines, %d bytes (counted %d); want at most %d bytes, the newest lines", len(got), n, r.bytes, maxLogBytes)
	}
}

func TestDeadLogsAreBounded(t *testing.T) {
	t.Parallel()
	var s sandboxLogs
	for i := 0; i < maxDeadLogs+10; i++ {
		id := "sb" + strconv.Itoa(i)
		s.sandbox(id).system(time.Now(), "info", "hello")
		s.forget(id)
		s.forget(id) // kill, then destroy
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.by) != maxDeadLogs || len(s.dead) != maxDeadLogs {
		t.Fatalf("%d logs and %d dead kept, want %d", len(s.by), len(s.dead), maxDeadLogs)
	}
}

func TestEnvdLogBounds(t *testing.T) {
	t.Parallel()
	f, err := os.CreateTemp(t.TempDir(), "init.log")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString(`time=2026-01-02T03:04:05Z level=INFO msg=big v="` + strings.Repeat("y", 3*maxLogLine) + "\"\n")
	for b.Len() < maxInitLogRead-1024 {
		b.WriteString("x\n")
	}
	if _, err := f.WriteString(b.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	got := envdLog(f, time.Now())
	if len(got) != maxLogEntries || got[len(got)-1].Message != "x" {
		t.Fatalf("%d entries, want the newest %d", len(got), maxLogEntries)
	}
	f.Seek(0, 0)
	f.Truncate(0)
	f.WriteString(`time=2026-01-02T03:04:05Z level=INFO msg=big v="` + strings.Repeat("y", 3*maxLogLine) + "\"\n")
	f.Seek(0, 0)
	if got := envdLog(f, time.Now()); len(got) != 1 || len(got[0].Fields["v"]) > maxLogLine+len("…") {
		t.Fatalf("a field of %d bytes was kept", len(got[0].Fields["v"]))
	}
}
