package usage

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/runtime"
)

// Stater reads a live sandbox's cgroup counters (the sandbox manager).
type Stater interface {
	Stats(ctx context.Context, id string) (runtime.Stats, error)
}

// Handler serves GET /usage and GET /sandboxes/{id}/usage.
type Handler struct {
	svc   *Service
	stats Stater // nil: no measured numbers (sbx monitor)
	log   *slog.Logger
}

// NewHandler returns the usage REST API. stats may be nil.
func NewHandler(svc *Service, stats Stater, log *slog.Logger) *Handler {
	return &Handler{svc: svc, stats: stats, log: log}
}

// Register adds the routes to mux (authenticated).
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /usage", h.totals)
	mux.HandleFunc("GET /sandboxes/{id}/usage", h.sandbox)
}

// TeamID returns the caller's team or an unauthenticated error.
func TeamID(r *http.Request) (string, error) {
	return auth.TeamID(r.Context())
}

// ParseTime reads a query time: RFC 3339 or unix seconds.
func ParseTime(name, v string, def time.Time) (time.Time, error) {
	if v == "" {
		return def, nil
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.Unix(n, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, errdefs.Invalid("%s=%q: want an RFC 3339 time (2026-01-02T15:04:05Z) or unix seconds", name, v)
	}
	return t.UTC(), nil
}

// ParseRange reads from and to, defaulting to [defFrom, now].
func ParseRange(r *http.Request, now, defFrom time.Time) (from, to time.Time, err error) {
	q := r.URL.Query()
	if from, err = ParseTime("from", q.Get("from"), defFrom); err != nil {
		return
	}
	if to, err = ParseTime("to", q.Get("to"), now); err != nil {
		return
	}
	if !to.After(from) {
		err = errdefs.Invalid("to (%s) must be after from (%s)", to.Format(time.RFC3339), from.Format(time.RFC3339))
	}
	return
}

// TeamRange reads what every usage and analytics query starts with: the
// caller's team, then the from/to range (defaulting to [defFrom, now]).
func TeamRange(r *http.Request, now, defFrom time.Time) (teamID string, from, to time.Time, err error) {
	if teamID, err = TeamID(r); err != nil {
		return "", from, to, err
	}
	from, to, err = ParseRange(r, now, defFrom)
	return teamID, from, to, err
}

// Report is the body of GET /usage.
type Report struct {
	From    time.Time `json:"from"`
	To      time.Time `json:"to"`
	GroupBy string    `json:"groupBy"`
	Rates   RatesJSON `json:"rates"`
	Total   Cost      `json:"total"`
	Groups  []Total   `json:"groups"`
}

// RatesJSON is the wire form of Rates.
type RatesJSON struct {
	VCPUSecond float64 `json:"vcpuSecondUsd"`
	GiBSecond  float64 `json:"gibSecondUsd"`
}

func (h *Handler) totals(w http.ResponseWriter, r *http.Request) {
	now := h.svc.Now()
	teamID, from, to, err := TeamRange(r, now, MonthStart(now))
	if err != nil {
		errdefs.WriteHTTP(w, h.log, err)
		return
	}
	groupBy := r.URL.Query().Get("groupBy")
	if groupBy == "" {
		groupBy = ByTemplate
	}
	valid := false
	for _, k := range GroupKeys {
		valid = valid || k == groupBy
	}
	if !valid {
		errdefs.WriteHTTP(w, h.log, errdefs.Invalid("groupBy=%q: use one of %s", groupBy, strings.Join(GroupKeys, ", ")))
		return
	}
	sbs, err := h.svc.Sandboxes(r.Context(), teamID, from)
	if err != nil {
		errdefs.WriteHTTP(w, h.log, err)
		return
	}
	groups, err := h.svc.rates.Totals(sbs, groupBy, from, to, now)
	if err != nil {
		errdefs.WriteHTTP(w, h.log, errdefs.Invalid("%v", err))
		return
	}
	rep := Report{From: from, To: to, GroupBy: groupBy, Groups: groups,
		Rates: RatesJSON{VCPUSecond: h.svc.rates.VCPUSecond, GiBSecond: h.svc.rates.GiBSecond}}
	for _, g := range groups {
		rep.Total.Add(g.Cost)
	}
	errdefs.WriteJSON(w, http.StatusOK, rep)
}

// SandboxUsage is the body of GET /sandboxes/{id}/usage.
type SandboxUsage struct {
	SandboxID  string     `json:"sandboxId"`
	TemplateID string     `json:"templateId"`
	Refinement string     `json:"refinementId,omitempty"`
	State      string     `json:"state"`
	VCPU       int        `json:"vcpuCount"`
	MemoryMB   int        `json:"memoryMB"`
	CreatedAt  time.Time  `json:"createdAt"`
	KilledAt   *time.Time `json:"killedAt,omitempty"`
	KillReason string     `json:"killReason,omitempty"`
	Allocated  Cost       `json:"allocated"`
	Measured   *Measured  `json:"measured,omitempty"`
}

// Measured is what the sandbox actually used, from its cgroup.
type Measured struct {
	CPUSeconds       float64 `json:"cpuSeconds"`
	MemoryBytes      uint64  `json:"memoryBytes"`
	MemoryLimitBytes uint64  `json:"memoryLimitBytes"`
	// CPUUtilization is CPU time over allocated vCPU-seconds (0–1).
	CPUUtilization float64 `json:"cpuUtilization"`
}

func (h *Handler) sandbox(w http.ResponseWriter, r *http.Request) {
	teamID, err := TeamID(r)
	if err != nil {
		errdefs.WriteHTTP(w, h.log, err)
		return
	}
	id := r.PathValue("id")
	sb, err := h.svc.Sandbox(r.Context(), teamID, id)
	if err != nil {
		errdefs.WriteHTTP(w, h.log, err)
		return
	}
	if sb == nil {
		errdefs.WriteHTTP(w, h.log, errdefs.NotFound("sandbox %s not found (no lifecycle events for it in your team)", id))
		return
	}
	errdefs.WriteJSON(w, http.StatusOK, h.describe(r.Context(), sb))
}

func (h *Handler) describe(ctx context.Context, sb *Sandbox) SandboxUsage {
	now := h.svc.Now()
	out := SandboxUsage{SandboxID: sb.ID, TemplateID: sb.TemplateID, Refinement: sb.Refinement,
		VCPU: sb.VCPU, MemoryMB: sb.MemoryMB, CreatedAt: sb.CreatedAt, KillReason: sb.KillReason,
		Allocated: h.svc.rates.Price(sb, time.Time{}, now.Add(time.Hour), now)}
	switch {
	case !sb.Alive():
		out.State = "killed"
		k := sb.KilledAt
		out.KilledAt = &k
	case sb.Paused:
		out.State = "paused"
	default:
		out.State = "running"
	}
	if h.stats != nil && sb.Alive() {
		if st, err := h.stats.Stats(ctx, sb.ID); err == nil {
			m := &Measured{CPUSeconds: st.CPUUsage.Seconds(), MemoryBytes: st.MemoryBytes, MemoryLimitBytes: st.MemoryLimit}
			if out.Allocated.VCPUSeconds > 0 {
				m.CPUUtilization = m.CPUSeconds / out.Allocated.VCPUSeconds
			}
			out.Measured = m
		}
	}
	return out
}
