package builder

import (
	"bytes"
	"io"
	"strconv"
	"strings"
)

// tailer follows a build sandbox's output (the init's stdout and stderr,
// an open file the sandbox cannot replace) and hands out complete lines,
// keeping the last few for error messages. The init script ends the step
// with a line "<mark> <exit code>", the mark being a secret of this step.
type tailer struct {
	r    io.Reader
	line func(string)
	mark []byte

	partial []byte
	cut     bool // the current line was too long: drop the rest of it
	blank   bool // an empty line held back: the end mark follows one
	recent  []string
	done    bool
	code    int
}

const (
	keepLines = 40
	// maxLine caps one log line; the rest of a longer one is dropped.
	maxLine = 4 << 10
	// maxPoll caps what one poll reads, so a step printing without end
	// cannot hold the executor.
	maxPoll = 4 << 20
)

func (t *tailer) poll() {
	buf := make([]byte, 64<<10)
	for read := 0; read < maxPoll && !t.done; {
		n, err := t.r.Read(buf)
		read += n
		t.feed(buf[:n])
		if err != nil || n == 0 {
			return
		}
	}
}

func (t *tailer) feed(b []byte) {
	for len(b) > 0 && !t.done {
		i := bytes.IndexByte(b, '\n')
		chunk := b
		if i >= 0 {
			chunk, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if !t.cut {
			room := maxLine - len(t.partial)
			if len(chunk) > room {
				chunk, t.cut = chunk[:room], true
			}
			t.partial = append(t.partial, chunk...)
		}
		if i >= 0 {
			t.endLine()
		}
	}
}

func (t *tailer) endLine() {
	line, cut := t.partial, t.cut
	t.partial, t.cut = t.partial[:0], false
	if !cut && len(t.mark) > 0 && bytes.HasPrefix(line, t.mark) && len(line) > len(t.mark) && line[len(t.mark)] == ' ' {
		if code, err := strconv.Atoi(string(line[len(t.mark)+1:])); err == nil {
			t.done, t.code, t.blank = true, code, false
			return
		}
	}
	if t.blank {
		t.blank = false
		t.emit("")
	}
	if len(line) == 0 {
		t.blank = true
		return
	}
	s := string(line)
	if cut {
		s += " [line cut at 4 KiB]"
	}
	t.emit(s)
}

// flush hands out what is left of an unterminated last line.
func (t *tailer) flush() {
	if t.blank {
		t.blank = false
		t.emit("")
	}
	if len(t.partial) > 0 {
		t.emit(string(t.partial))
		t.partial = t.partial[:0]
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
