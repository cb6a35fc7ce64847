package history

import (
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store"
)

// Sandboxes finds a team's sandbox and samples a running one now.
type Sandboxes interface {
	Get(ctx context.Context, teamID, id string) (store.Sandbox, error)
	Metrics(ctx context.Context, teamID, id string) ([]sandbox.Metric, error)
}

// Handler serves E2B's metrics routes from a History.
type Handler struct {
	h   *History
	sbx Sandboxes
	log *slog.Logger
}

// NewHandler returns the metrics routes; register them with api.New.
func NewHandler(h *History, sbx Sandboxes, log *slog.Logger) *Handler {
	return &Handler{h: h, sbx: sbx, log: log}
}

// Register adds the routes.
func (hd *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /sandboxes/{id}/metrics", hd.sandbox)
	mux.HandleFunc("GET /sandboxes/metrics", hd.several)
	mux.HandleFunc("GET /teams/{teamID}/metrics", hd.team)
	mux.HandleFunc("GET /teams/{teamID}/metrics/max", hd.teamMax)
}

// AdminPatterns: the admin key reads any team's metrics (api.AdminRoutes).
func (hd *Handler) AdminPatterns() []string {
	return []string{"GET /teams/{teamID}/metrics", "GET /teams/{teamID}/metrics/max"}
}

// MetricJSON is E2B's SandboxMetric.
type MetricJSON struct {
	Timestamp     time.Time `json:"timestamp"`
	TimestampUnix int64     `json:"timestampUnix"`
	CPUCount      int       `json:"cpuCount"`
	CPUUsedPct    float64   `json:"cpuUsedPct"`
	MemUsed       uint64    `json:"memUsed"`
	MemTotal      uint64    `json:"memTotal"`
	MemCache      uint64    `json:"memCache"`
	DiskUsed      uint64    `json:"diskUsed"`
	DiskTotal     uint64    `json:"diskTotal"`
}

func toJSON(m sandbox.Metric) MetricJSON {
	return MetricJSON{Timestamp: m.Timestamp.UTC(), TimestampUnix: m.Timestamp.Unix(), CPUCount: m.CPUCount,
		CPUUsedPct: m.CPUUsedPct, MemUsed: m.MemUsed, MemTotal: m.MemTotal, DiskUsed: m.DiskUsed, DiskTotal: m.DiskTotal}
}

// interval parses start and end (Unix seconds, both optional).
func interval(r *http.Request) (start, end time.Time, err error) {
	q := r.URL.Query()
	for _, p := range []struct {
		name string
		to   *time.Time
	}{{"start", &start}, {"end", &end}} {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		n, perr := strconv.ParseInt(v, 10, 64)
		if perr != nil || n < 0 || n > 1<<40 {
			return start, end, errdefs.Invalid("%s must be a Unix time in seconds, got %q", p.name, truncate(v))
		}
		*p.to = time.Unix(n, 0).UTC()
	}
	if !start.IsZero() && !end.IsZero() && end.Before(start) {
		return start, end, errdefs.Invalid("end (%d) is before start (%d)", end.Unix(), start.Unix())
	}
	return start, end, nil
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}

func teamOf(r *http.Request) auth.Team {
	t, _ := auth.TeamFrom(r.Context())
	return t
}

// sandbox answers a sandbox's samples within [start, end]. A running
// sandbox whose interval reaches the present gets a live sample too, so a
// sandbox just created already has one.
func (hd *Handler) sandbox(w http.ResponseWriter, r *http.Request) {
	start, end, err := interval(r)
	if err != nil {
		hd.fail(w, err)
		return
	}
	teamID := teamOf(r).ID
	sb, err := hd.sbx.Get(r.Context(), teamID, r.PathValue("id"))
	if err != nil {
		hd.fail(w, err)
		return
	}
	// end is whole seconds: a sample taken within the second of end counts.
	until := end
	if !until.IsZero() {
		until = until.Add(time.Second - 1)
	}
	if sb.State == store.StateRunning && (end.IsZero() || !until.Before(hd.h.now())) {
		if ms, err := hd.sbx.Metrics(r.Context(), teamID, sb.ID); err == nil && len(ms) > 0 {
			hd.h.Record(teamID, sb.ID, ms[0])
		}
	}
	ms := hd.h.Sandbox(sb.ID, start, until)
	out := make([]MetricJSON, 0, len(ms))
	for _, m := range ms {
		out = append(out, toJSON(m))
	}
	writeJSON(w, http.StatusOK, out)
}

// several answers the latest sample of each of several sandboxes (E2B's
// SandboxesWithMetrics); IDs that name none of the team's sandboxes, or a
// sandbox without samples, are left out.
func (hd *Handler) several(w http.ResponseWriter, r *http.Request) {
	var ids []string
	for _, v := range r.URL.Query()["sandbox_ids"] {
		for _, id := range strings.Split(v, ",") {
			if id = strings.TrimSpace(id); id != "" && !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	switch {
	case len(ids) == 0:
		hd.fail(w, errdefs.Invalid("sandbox_ids is required: a comma-separated list of sandbox IDs"))
		return
	case len(ids) > 100:
		hd.fail(w, errdefs.Invalid("sandbox_ids names %d sandboxes; at most 100 at a time", len(ids)))
		return
	}
	teamID := teamOf(r).ID
	out := map[string]MetricJSON{}
	for _, id := range ids {
		sb, err := hd.sbx.Get(r.Context(), teamID, id)
		if err != nil {
			continue
		}
		m, ok := hd.h.Latest(sb.ID)
		if sb.State == store.StateRunning && (!ok || hd.h.now().Sub(m.Timestamp) > hd.h.interval) {
			if ms, err := hd.sbx.Metrics(r.Context(), teamID, sb.ID); err == nil && len(ms) > 0 {
				hd.h.Record(teamID, sb.ID, ms[0])
				m, ok = ms[0], true
			}
		}
		if ok {
			out[sb.ID] = toJSON(m)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"sandboxes": out})
}

// teamFor checks that the caller may read teamID's metrics: its own team,
// or any team for the admin key.
func teamFor(r *http.Request) (string, error) {
	t, want := teamOf(r), r.PathValue("teamID")
	if want != t.ID && !t.Admin {
		return "", errdefs.Denied("team %q is not your team: an API key reads only its own team's metrics", truncate(want))
	}
	return want, nil
}

// teamInterval is the team and the [start, end] of a team metrics request;
// end covers the whole second it names.
func teamInterval(r *http.Request) (teamID string, start, end time.Time, err error) {
	if teamID, err = teamFor(r); err != nil {
		return "", start, end, err
	}
	if start, end, err = interval(r); err != nil {
		return "", start, end, err
	}
	if !end.IsZero() {
		end = end.Add(time.Second - 1)
	}
	return teamID, start, end, nil
}

type teamMetricJSON struct {
	Timestamp           time.Time `json:"timestamp"`
	TimestampUnix       int64     `json:"timestampUnix"`
	ConcurrentSandboxes int       `json:"concurrentSandboxes"`
	SandboxStartRate    float64   `json:"sandboxStartRate"`
}

func (hd *Handler) team(w http.ResponseWriter, r *http.Request) {
	teamID, start, end, err := teamInterval(r)
	if err != nil {
		hd.fail(w, err)
		return
	}
	out := []teamMetricJSON{}
	for _, s := range hd.h.Team(teamID, start, end) {
		out = append(out, teamMetricJSON{Timestamp: s.At, TimestampUnix: s.At.Unix(),
			ConcurrentSandboxes: s.Concurrent, SandboxStartRate: s.StartRate})
	}
	writeJSON(w, http.StatusOK, out)
}

type maxJSON struct {
	Timestamp     time.Time `json:"timestamp"`
	TimestampUnix int64     `json:"timestampUnix"`
	Value         float64   `json:"value"`
}

func (hd *Handler) teamMax(w http.ResponseWriter, r *http.Request) {
	teamID, start, end, err := teamInterval(r)
	if err != nil {
		hd.fail(w, err)
		return
	}
	var value func(TeamSample) float64
	switch m := r.URL.Query().Get("metric"); m {
	case "concurrent_sandboxes":
		value = func(s TeamSample) float64 { return float64(s.Concurrent) }
	case "sandbox_start_rate":
		value = func(s TeamSample) float64 { return s.StartRate }
	default:
		hd.fail(w, errdefs.Invalid("metric must be concurrent_sandboxes or sandbox_start_rate, got %q", truncate(m)))
		return
	}
	// No sample in the interval: the maximum is 0, at the interval's end.
	best := maxJSON{Timestamp: cmp.Or(end, hd.h.now()).UTC().Truncate(time.Second)}
	found := false
	for _, s := range hd.h.Team(teamID, start, end) {
		if v := value(s); !found || v > best.Value {
			best, found = maxJSON{Timestamp: s.At, Value: v}, true
		}
	}
	best.TimestampUnix = best.Timestamp.Unix()
	writeJSON(w, http.StatusOK, best)
}

func (hd *Handler) fail(w http.ResponseWriter, err error) { errdefs.WriteHTTP(w, hd.log, err) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
