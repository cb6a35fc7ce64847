package api

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/sandbox"
)

// sandboxLogger is the manager's sandbox log (start command and envd).
type sandboxLogger interface {
	Logs(ctx context.Context, teamID, id string) ([]sandbox.LogEntry, error)
}

type logEntryJSON struct {
	Timestamp time.Time         `json:"timestamp"`
	Level     string            `json:"level"`
	Message   string            `json:"message"`
	Fields    map[string]string `json:"fields"`
}

type logLineJSON struct {
	Timestamp time.Time `json:"timestamp"`
	Line      string    `json:"line"`
}

var logLevels = map[string]int{"debug": 0, "info": 1, "warn": 2, "error": 3}

func (s *Server) sandboxLogs(r *http.Request) ([]sandbox.LogEntry, error) {
	lg, ok := s.sandboxes.(sandboxLogger)
	if !ok {
		return nil, errdefs.Precondition("this server keeps no sandbox logs")
	}
	return lg.Logs(r.Context(), team(r).ID, r.PathValue("id"))
}

func toEntryJSON(e sandbox.LogEntry) logEntryJSON {
	f := e.Fields
	if f == nil {
		f = map[string]string{}
	}
	return logEntryJSON{Timestamp: e.Timestamp, Level: e.Level, Message: e.Message, Fields: f}
}

// intParam reads an optional non-negative integer query parameter.
func intParam(r *http.Request, name string, def, max int64) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > max {
		return 0, errdefs.Invalid("%s must be an integer from 0 to %d, got %q", name, max, truncate(v, 32))
	}
	return n, nil
}

// logsV1 serves GET /sandboxes/{id}/logs: lines from start (Unix ms) on,
// at most limit (default 1000), oldest first.
func (s *Server) logsV1(w http.ResponseWriter, r *http.Request) {
	start, err := intParam(r, "start", 0, 1<<53)
	if err != nil {
		s.fail(w, err)
		return
	}
	limit, err := intParam(r, "limit", 1000, 1<<31-1)
	if err != nil {
		s.fail(w, err)
		return
	}
	all, err := s.sandboxLogs(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	from := time.UnixMilli(start)
	out := struct {
		Logs       []logLineJSON  `json:"logs"`
		LogEntries []logEntryJSON `json:"logEntries"`
	}{Logs: []logLineJSON{}, LogEntries: []logEntryJSON{}}
	for _, e := range all {
		if int64(len(out.Logs)) >= limit {
			break
		}
		if start > 0 && e.Timestamp.Before(from) {
			continue
		}
		out.Logs = append(out.Logs, logLineJSON{Timestamp: e.Timestamp, Line: e.Message})
		out.LogEntries = append(out.LogEntries, toEntryJSON(e))
	}
	writeJSON(w, http.StatusOK, out)
}

// logsV2 serves GET /v2/sandboxes/{id}/logs: cursor (Unix ms; from it on
// going forward, up to it going backward), limit (≤1000), direction, a
// minimum level and a case-insensitive search in the message.
func (s *Server) logsV2(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	cursor, err := intParam(r, "cursor", 0, 1<<53)
	if err != nil {
		s.fail(w, err)
		return
	}
	limit, err := intParam(r, "limit", 1000, 1000)
	if err != nil {
		s.fail(w, err)
		return
	}
	backward := false
	switch d := q.Get("direction"); d {
	case "", "forward":
	case "backward":
		backward = true
	default:
		s.fail(w, errdefs.Invalid("direction must be forward or backward, got %q", truncate(d, 32)))
		return
	}
	minLevel := -1
	if l := q.Get("level"); l != "" {
		n, ok := logLevels[l]
		if !ok {
			s.fail(w, errdefs.Invalid("level must be debug, info, warn or error, got %q", truncate(l, 32)))
			return
		}
		minLevel = n
	}
	search := strings.ToLower(q.Get("search"))
	all, err := s.sandboxLogs(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	if backward {
		for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
			all[i], all[j] = all[j], all[i]
		}
	}
	at := time.UnixMilli(cursor)
	out := []logEntryJSON{}
	for _, e := range all {
		if int64(len(out)) >= limit {
			break
		}
		if q.Has("cursor") && ((!backward && e.Timestamp.Before(at)) || (backward && e.Timestamp.After(at))) {
			continue
		}
		if logLevels[e.Level] < minLevel || (search != "" && !strings.Contains(strings.ToLower(e.Message), search)) {
			continue
		}
		out = append(out, toEntryJSON(e))
	}
	writeJSON(w, http.StatusOK, map[string]any{"logs": out})
}
