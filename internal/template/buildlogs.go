package template

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// buildLogPage is how many lines of a build's log are read from the store
// at a time to answer a logs query: a build keeps up to maxLogLines lines
// of 4 KiB (80 MB), and a query answers at most 100 of them, so it reads
// page by page and keeps only what it answers.
const buildLogPage = 500

// LogQuery is E2B's build-logs query: cursor (a timestamp in ms: lines
// from it on going forward, before it going backward), limit (≤100),
// direction and a minimum level.
type LogQuery struct {
	Cursor   time.Time // zero: from the start (forward) or the end (backward)
	Limit    int
	Backward bool
	Level    string // "" = every level
}

var levelRank = map[string]int{"debug": 0, "info": 1, "warn": 2, "error": 3}

// BuildLogs returns a build's log lines selected by q, in time order
// (newest first when backward).
func (s *Service) BuildLogs(ctx context.Context, teamID, templateID, buildID string, q LogQuery) ([]LogEntry, error) {
	id, err := s.idOf(teamID, templateID)
	if err != nil {
		return nil, err
	}
	if _, err := s.owned(ctx, teamID, id); err != nil {
		return nil, err
	}
	b, err := s.store.Build(ctx, buildID)
	if err != nil || b.TemplateID != id {
		return nil, errdefs.NotFound("build %q of template %q not found", buildID, templateID)
	}
	match := func(e LogEntry) bool {
		if q.Level != "" && levelRank[e.Level] < levelRank[q.Level] {
			return false
		}
		return q.Cursor.IsZero() || (!q.Backward && !e.Timestamp.Before(q.Cursor)) || (q.Backward && !e.Timestamp.After(q.Cursor))
	}
	// Forward: the first q.Limit matches. Backward: the last q.Limit
	// matches, newest first, kept in a window while reading forward.
	out := []LogEntry{}
	for offset := 0; ; {
		page, err := s.store.BuildLogs(ctx, buildID, offset, buildLogPage)
		if err != nil {
			return nil, err
		}
		for _, e := range page {
			if !match(e) {
				continue
			}
			out = append(out, e)
			if len(out) > q.Limit {
				out = out[1:] // backward only: forward stops at the limit
			}
			if !q.Backward && len(out) == q.Limit {
				return out, nil
			}
		}
		if len(page) < buildLogPage {
			break
		}
		offset += len(page)
	}
	if q.Backward {
		out = slices.Clone(out)
		slices.Reverse(out)
	}
	return out, nil
}

// parseLogQuery reads cursor, limit, direction and level.
func parseLogQuery(r *http.Request) (LogQuery, error) {
	v := r.URL.Query()
	q := LogQuery{Limit: 100}
	if c := v.Get("cursor"); c != "" {
		ms, err := strconv.ParseInt(c, 10, 64)
		if err != nil || ms < 0 {
			return q, errdefs.Invalid("cursor must be a Unix time in milliseconds, got %q", c)
		}
		q.Cursor = time.UnixMilli(ms).UTC()
	}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 || n > 100 {
			return q, errdefs.Invalid("limit must be between 0 and 100, got %q", l)
		}
		q.Limit = n
	}
	switch d := v.Get("direction"); d {
	case "", "forward":
	case "backward":
		q.Backward = true
	default:
		return q, errdefs.Invalid("direction must be forward or backward, got %q", d)
	}
	if l := v.Get("level"); l != "" {
		if _, ok := levelRank[l]; !ok {
			return q, errdefs.Invalid("level must be debug, info, warn or error, got %q", l)
		}
		q.Level = l
	}
	// source (temporary/persistent) names E2B's two log stores; sbx keeps
	// one, persistent, which answers both.
	if src := v.Get("source"); src != "" && src != "temporary" && src != "persistent" {
		return q, errdefs.Invalid("source must be temporary or persistent, got %q", src)
	}
	return q, nil
}

// buildLogs serves GET /templates/{id}/builds/{buildID}/logs (E2B's
// TemplateBuildLogsResponse).
func (h *Handler) buildLogs(w http.ResponseWriter, r *http.Request) {
	q, err := parseLogQuery(r)
	if err != nil {
		h.fail(w, err)
		return
	}
	if q.Limit == 0 {
		writeJSON(w, http.StatusOK, map[string]any{"logs": []LogEntry{}})
		return
	}
	logs, err := h.svc.BuildLogs(r.Context(), teamID(r), r.PathValue("id"), r.PathValue("buildID"), q)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"logs": logs})
}
