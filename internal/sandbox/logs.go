package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/runtime"
)

// A sandbox's logs (E2B's GET /sandboxes/{id}/logs) are the output of its
// template's start command, kept by the manager as it streams in until the
// sandbox is ready, and envd's own log (the init's output, read from the
// runtime's log file at query time). Both are bounded: a sandbox printing
// without end costs the host a fixed amount of memory.
const (
	maxLogEntries = 1000
	maxLogLine    = 4096      // longer lines are cut
	maxLogBytes   = 256 << 10 // one sandbox's kept messages: oldest dropped first
	// maxDeadLogs bounds how many killed sandboxes' logs wait out logKeep:
	// a tenant creating and killing sandboxes in a loop must not hold
	// (rate × logKeep) logs; the oldest go first.
	maxDeadLogs    = 256
	maxInitLogRead = 256 << 10 // the newest bytes of envd's log that are read
	// logKeep is how long the start command's output stays after a kill,
	// for a client reading why its sandbox died.
	logKeep = 10 * time.Minute
)

// LogEntry is one line of a sandbox's log (E2B's SandboxLogEntry).
type LogEntry struct {
	Timestamp time.Time
	Level     string // debug, info, warn, error
	Message   string
	Fields    map[string]string // source: start-command, envd or sbx; stream
}

// sandboxLogs holds each sandbox's start-command log.
type sandboxLogs struct {
	mu   sync.Mutex
	by   map[string]*logRing
	dead []string // killed sandboxes whose logs are kept, oldest first
}

func (s *sandboxLogs) sandbox(id string) *logRing {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.by == nil {
		s.by = map[string]*logRing{}
	}
	r := s.by[id]
	if r == nil {
		r = &logRing{partial: map[string]string{}}
		s.by[id] = r
	}
	return r
}

func (s *sandboxLogs) get(id string) []LogEntry {
	s.mu.Lock()
	r := s.by[id]
	s.mu.Unlock()
	if r == nil {
		return nil
	}
	return r.entries()
}

// forget drops a killed sandbox's log after logKeep, or sooner when more
// than maxDeadLogs killed sandboxes' logs are kept.
func (s *sandboxLogs) forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.by[id]; !ok || slices.Contains(s.dead, id) {
		return // no log, or forgotten already (kill, then destroy)
	}
	s.dead = append(s.dead, id)
	if len(s.dead) > maxDeadLogs {
		delete(s.by, s.dead[0])
		s.dead = slices.Delete(s.dead, 0, 1)
	}
	time.AfterFunc(logKeep, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.by, id)
		if i := slices.Index(s.dead, id); i >= 0 {
			s.dead = slices.Delete(s.dead, i, i+1)
		}
	})
}

type logRing struct {
	mu      sync.Mutex
	list    []LogEntry
	bytes   int               // of the kept messages
	partial map[string]string // by stream: output after the last newline
}

// add keeps e, dropping the oldest entries beyond maxLogEntries lines or
// maxLogBytes bytes: 1000 lines of 4 KiB would be 4 MiB per sandbox.
func (r *logRing) add(e LogEntry) {
	if len(e.Message) > maxLogLine {
		e.Message = e.Message[:maxLogLine] + "…"
	}
	r.list = append(r.list, e)
	r.bytes += len(e.Message)
	drop := 0
	for len(r.list)-drop > maxLogEntries || (r.bytes > maxLogBytes && drop < len(r.list)-1) {
		r.bytes -= len(r.list[drop].Message)
		r.list[drop] = LogEntry{} // let go of its message now
		drop++
	}
	// Reslicing, not shifting: a start command printing empty lines would
	// otherwise cost a copy of the whole list per line. append moves the
	// kept entries to a new array when this one's capacity runs out.
	r.list = r.list[drop:]
}

// system records a line of sbx's own about the sandbox.
func (r *logRing) system(at time.Time, level, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.add(LogEntry{Timestamp: at.UTC(), Level: level, Message: msg, Fields: map[string]string{"source": "sbx"}})
}

// output records a chunk of the start command's output, line by line.
func (r *logRing) output(at time.Time, stream, chunk string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	text := r.partial[stream] + chunk
	lines := strings.Split(text, "\n")
	rest := lines[len(lines)-1]
	if len(rest) > maxLogLine { // a line without end: flush what there is
		lines, rest = append(lines, ""), ""
	}
	r.partial[stream] = rest
	level := "info"
	if stream == "stderr" {
		level = "error"
	}
	for _, l := range lines[:len(lines)-1] {
		r.add(LogEntry{Timestamp: at.UTC(), Level: level, Message: l,
			Fields: map[string]string{"source": "start-command", "stream": stream}})
	}
}

func (r *logRing) entries() []LogEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]LogEntry(nil), r.list...)
}

// Logs returns a team's sandbox's log, oldest first.
func (m *Manager) Logs(ctx context.Context, teamID, id string) ([]LogEntry, error) {
	sb, err := m.Get(ctx, teamID, id)
	if err != nil {
		return nil, err
	}
	out := m.logs.get(sb.ID)
	if f := m.openOutput(ctx, sb.ID); f != nil {
		out = append(out, envdLog(f, m.now())...)
		f.Close()
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Timestamp.Before(out[j].Timestamp) })
	return out, nil
}

// openOutput opens envd's log (the init's output) if the sandbox's runtime
// keeps one; nil otherwise.
func (m *Manager) openOutput(ctx context.Context, id string) *os.File {
	o, ok := m.rt.of(ctx, id).(runtime.Output)
	if !ok {
		return nil
	}
	f, err := o.OpenOutput(id)
	if err != nil {
		return nil
	}
	return f
}

// envdLog parses the newest lines of envd's log: slog's text format
// (time=… level=… msg=… key=value…). The file is written inside the
// sandbox, so every line is untrusted text: lengths are capped and a line
// that does not parse is kept whole as a message.
func envdLog(f *os.File, now time.Time) []LogEntry {
	if st, err := f.Stat(); err == nil && st.Size() > maxInitLogRead {
		if _, err := f.Seek(-maxInitLogRead, io.SeekEnd); err != nil {
			return nil
		}
	}
	var out []LogEntry
	sc := bufio.NewScanner(io.LimitReader(f, maxInitLogRead))
	sc.Buffer(make([]byte, 0, 64<<10), maxInitLogRead)
	first := true
	for sc.Scan() {
		line := sc.Bytes()
		if first { // after a seek the first line is probably cut
			first = false
			if st, _ := f.Stat(); st != nil && st.Size() > maxInitLogRead {
				continue
			}
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		e := parseLogfmt(string(line))
		if e.Timestamp.IsZero() {
			e.Timestamp = now.UTC()
		}
		if len(e.Message) > maxLogLine {
			e.Message = e.Message[:maxLogLine] + "…"
		}
		e.Fields["source"] = "envd"
		out = append(out, e)
		if len(out) > 2*maxLogEntries { // keep the newest: 256 KiB of short lines are many entries
			out = append(out[:0], out[len(out)-maxLogEntries:]...)
		}
	}
	if len(out) > maxLogEntries {
		out = out[len(out)-maxLogEntries:]
	}
	return out
}

// parseLogfmt reads one slog text line.
func parseLogfmt(line string) LogEntry {
	e := LogEntry{Level: "info", Fields: map[string]string{}}
	rest := line
	for rest != "" {
		rest = strings.TrimLeft(rest, " ")
		k, after, ok := strings.Cut(rest, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \"") {
			return LogEntry{Level: "info", Message: line, Fields: map[string]string{}}
		}
		var v string
		if strings.HasPrefix(after, `"`) {
			q, err := strconv.QuotedPrefix(after)
			if err != nil {
				return LogEntry{Level: "info", Message: line, Fields: map[string]string{}}
			}
			v, _ = strconv.Unquote(q)
			rest = after[len(q):]
		} else {
			v, rest, _ = strings.Cut(after, " ")
		}
		switch k {
		case "time":
			e.Timestamp, _ = time.Parse(time.RFC3339Nano, v)
		case "level":
			e.Level = strings.ToLower(v)
			if e.Level == "warning" {
				e.Level = "warn"
			}
		case "msg":
			e.Message = v
		default:
			if len(e.Fields) < 32 && len(k) <= 64 {
				if len(v) > maxLogLine {
					v = v[:maxLogLine] + "…"
				}
				e.Fields[k] = v
			}
		}
	}
	switch e.Level {
	case "debug", "info", "warn", "error":
	default:
		e.Level = "info"
	}
	return e
}
