package builder

import (
	"bytes"
	"io"
	"os"
	"strings"
)

// tailer follows a build step's log file and hands out complete lines,
// keeping the last few for error messages.
type tailer struct {
	path    string
	line    func(string)
	off     int64
	partial []byte
	recent  []string
}

const keepLines = 40

func (t *tailer) poll() {
	f, err := os.Open(t.path)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.Seek(t.off, io.SeekStart); err != nil {
		return
	}
	b, _ := io.ReadAll(io.LimitReader(f, 4<<20))
	t.off += int64(len(b))
	t.partial = append(t.partial, b...)
	for {
		i := bytes.IndexByte(t.partial, '\n')
		if i < 0 {
			break
		}
		t.emit(string(t.partial[:i]))
		t.partial = t.partial[i+1:]
	}
	if len(t.partial) > 64<<10 { // an endless line: cut it
		t.emit(string(t.partial))
		t.partial = nil
	}
}

func (t *tailer) flush() {
	if len(t.partial) > 0 {
		t.emit(string(t.partial))
		t.partial = nil
	}
}

func (t *tailer) emit(s string) {
	s = strings.TrimRight(s, "\r")
	if i := strings.LastIndexByte(s, '\r'); i >= 0 { // progress bars: keep the final state
		s = s[i+1:]
	}
	if t.line != nil {
		t.line(s)
	}
	t.recent = append(t.recent, s)
	if len(t.recent) > keepLines {
		t.recent = t.recent[len(t.recent)-keepLines:]
	}
}

func (t *tailer) last() string { return strings.Join(t.recent, "\n") }
