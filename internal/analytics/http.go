package analytics

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/usage"
)

// Handler serves GET /analytics/summary and GET /analytics/timeseries.
type Handler struct {
	svc *Service
	now func() time.Time
	log *slog.Logger
}

// NewHandler returns the analytics REST API.
func NewHandler(svc *Service, log *slog.Logger) *Handler {
	return &Handler{svc: svc, now: svc.usage.Now, log: log}
}

// Register adds the routes (authenticated; each team sees its own data).
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /analytics/summary", h.summary)
	mux.HandleFunc("GET /analytics/timeseries", h.timeseries)
}

func (h *Handler) summary(w http.ResponseWriter, r *http.Request) {
	now := h.now()
	teamID, from, to, err := usage.TeamRange(r, now, now.Add(-24*time.Hour))
	if err != nil {
		errdefs.WriteHTTP(w, h.log, err)
		return
	}
	sum, err := h.svc.Summarize(r.Context(), teamID, from, to)
	if err != nil {
		errdefs.WriteHTTP(w, h.log, err)
		return
	}
	errdefs.WriteJSON(w, http.StatusOK, sum)
}

// Series is the body of GET /analytics/timeseries.
type Series struct {
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
	Step   float64   `json:"stepSeconds"`
	Points []Point   `json:"points"`
}

func (h *Handler) timeseries(w http.ResponseWriter, r *http.Request) {
	now := h.now()
	teamID, from, to, err := usage.TeamRange(r, now, now.Add(-time.Hour))
	if err != nil {
		errdefs.WriteHTTP(w, h.log, err)
		return
	}
	step := time.Minute
	if v := r.URL.Query().Get("step"); v != "" {
		if step, err = time.ParseDuration(v); err != nil || step < time.Second {
			errdefs.WriteHTTP(w, h.log, errdefs.Invalid("step=%q: want a duration of at least 1s, like 30s, 5m or 1h", v))
			return
		}
	}
	if n := to.Sub(from) / step; n > MaxPoints {
		errdefs.WriteHTTP(w, h.log, errdefs.Invalid("from..to with step %s gives %d points; the maximum is %d: use a larger step", step, n, MaxPoints))
		return
	}
	pts, err := h.svc.Timeseries(r.Context(), teamID, from, to, step)
	if err != nil {
		errdefs.WriteHTTP(w, h.log, err)
		return
	}
	errdefs.WriteJSON(w, http.StatusOK, Series{From: from, To: to, Step: step.Seconds(), Points: pts})
}
