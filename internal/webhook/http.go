package webhook

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/query"
	"github.com/sbxdev/sbx/internal/request"
)

// Handler serves the webhook registration API (protocol doc §1.7).
type Handler struct {
	engine *Engine
	logger *slog.Logger
}

// NewHandler returns the webhook API over engine.
func NewHandler(engine *Engine, logger *slog.Logger) *Handler {
	return &Handler{engine: engine, logger: logger}
}

// Register adds the webhook routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /events/webhooks", h.create)
	mux.HandleFunc("GET /events/webhooks", h.list)
	mux.HandleFunc("GET /events/webhooks/{id}", h.get)
	mux.HandleFunc("PATCH /events/webhooks/{id}", h.update)
	mux.HandleFunc("DELETE /events/webhooks/{id}", h.delete)
	mux.HandleFunc("GET /events/webhooks/{id}/deliveries", h.deliveries)
	mux.HandleFunc("GET /events/webhooks/{id}/stats", h.stats)
	mux.HandleFunc("POST /events/webhooks/{id}/test", h.test)
	mux.HandleFunc("POST /events/webhooks/{id}/deliveries/{deliveryId}/redeliver", h.redeliver)
}

// Detail is a webhook as the API shows it: never with its secret.
type Detail struct {
	ID             string    `json:"id"`
	TeamID         string    `json:"teamId"`
	Name           string    `json:"name"`
	CreatedAt      time.Time `json:"createdAt"`
	URL            string    `json:"url"`
	Enabled        bool      `json:"enabled"`
	Events         []string  `json:"events"`
	DisabledReason string    `json:"disabledReason,omitempty"`
}

func detail(w *Webhook) Detail {
	return Detail{ID: w.ID, TeamID: w.TeamID, Name: w.Name, CreatedAt: w.CreatedAt, URL: w.URL,
		Enabled: w.Enabled, Events: w.Events, DisabledReason: w.DisabledReason}
}

// handle runs fn with the caller's team and writes its result or error.
func (h *Handler) handle(w http.ResponseWriter, r *http.Request, status int, fn func(team string) (any, error)) {
	teamID, err := auth.TeamID(r.Context())
	if err != nil {
		errdefs.WriteHTTP(w, h.logger, err)
		return
	}
	v, err := fn(teamID)
	if err != nil {
		errdefs.WriteHTTP(w, h.logger, err)
		return
	}
	if v == nil {
		w.WriteHeader(status)
		return
	}
	errdefs.WriteJSON(w, status, v)
}

// decode reads a webhook body (request.Decode: strict, 64 KiB at most).
func decode(r *http.Request, v any) error { return request.Decode(r, v, 64<<10) }

func (h *Handler) create(w http.ResponseWriter, r *http.Request) {
	h.handle(w, r, http.StatusCreated, func(team string) (any, error) {
		var in Input
		if err := decode(r, &in); err != nil {
			return nil, err
		}
		wh, err := h.engine.Create(r.Context(), team, in)
		if err != nil {
			return nil, err
		}
		return detail(wh), nil
	})
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	h.handle(w, r, http.StatusOK, func(team string) (any, error) {
		hooks, err := h.engine.List(r.Context(), team)
		if err != nil {
			return nil, err
		}
		out := make([]Detail, 0, len(hooks))
		for _, wh := range hooks {
			out = append(out, detail(wh))
		}
		return out, nil
	})
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request) {
	h.handle(w, r, http.StatusOK, func(team string) (any, error) {
		wh, err := h.engine.Get(r.Context(), team, r.PathValue("id"))
		if err != nil {
			return nil, err
		}
		return detail(wh), nil
	})
}

func (h *Handler) update(w http.ResponseWriter, r *http.Request) {
	h.handle(w, r, http.StatusOK, func(team string) (any, error) {
		var in Input
		if err := decode(r, &in); err != nil {
			return nil, err
		}
		wh, err := h.engine.Update(r.Context(), team, r.PathValue("id"), in)
		if err != nil {
			return nil, err
		}
		return detail(wh), nil
	})
}

func (h *Handler) delete(w http.ResponseWriter, r *http.Request) {
	h.handle(w, r, http.StatusOK, func(team string) (any, error) {
		return nil, h.engine.Delete(r.Context(), team, r.PathValue("id"))
	})
}

func (h *Handler) test(w http.ResponseWriter, r *http.Request) {
	h.handle(w, r, http.StatusOK, func(team string) (any, error) {
		return h.engine.Test(r.Context(), team, r.PathValue("id"))
	})
}

func (h *Handler) redeliver(w http.ResponseWriter, r *http.Request) {
	h.handle(w, r, http.StatusAccepted, func(team string) (any, error) {
		id, err := h.engine.Redeliver(r.Context(), team, r.PathValue("id"), r.PathValue("deliveryId"))
		if err != nil {
			return nil, err
		}
		return map[string]string{"deliveryId": id, "status": statePending}, nil
	})
}

func parseTime(q map[string][]string, name string) (time.Time, error) {
	v := ""
	if vs := q[name]; len(vs) > 0 {
		v = vs[0]
	}
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return t, errdefs.Invalid("%s must be an RFC 3339 date-time such as 2026-01-02T15:04:05Z, got %q", name, v)
	}
	return t, nil
}

func (h *Handler) deliveries(w http.ResponseWriter, r *http.Request) {
	h.handle(w, r, http.StatusOK, func(team string) (any, error) {
		q := r.URL.Query()
		dq := DeliveryQuery{Cursor: q.Get("cursor"), Limit: 25}
		var err error
		if dq.Limit, err = query.Limit(q, dq.Limit, 100); err != nil {
			return nil, err
		}
		if dq.OrderAsc, err = query.Bool(q, "orderAsc"); err != nil {
			return nil, err
		}
		if dq.Start, err = parseTime(q, "start"); err != nil {
			return nil, err
		}
		if dq.End, err = parseTime(q, "end"); err != nil {
			return nil, err
		}
		for _, s := range query.List(q["deliveryStatus"]) {
			if s != stateSuccess && s != stateFailed && s != statePending {
				return nil, errdefs.Invalid("deliveryStatus %q is not one of success, failed, pending", s)
			}
			dq.Statuses = append(dq.Statuses, s)
		}
		if dq.EventTypes, err = events.ParseTypes(q["eventType"], "eventType"); err != nil {
			return nil, err
		}
		return h.engine.Deliveries(r.Context(), team, r.PathValue("id"), dq)
	})
}

func (h *Handler) stats(w http.ResponseWriter, r *http.Request) {
	h.handle(w, r, http.StatusOK, func(team string) (any, error) {
		q := r.URL.Query()
		start, err := parseTime(q, "start")
		if err != nil {
			return nil, err
		}
		end, err := parseTime(q, "end")
		if err != nil {
			return nil, err
		}
		if !start.IsZero() && !end.IsZero() && !end.After(start) {
			return nil, errdefs.Invalid("end must be after start")
		}
		return h.engine.Stats(r.Context(), team, r.PathValue("id"), start, end)
	})
}
