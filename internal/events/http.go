package events

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/query"
)

// Handler serves the events REST API and the SSE stream (protocol doc §1.7).
type Handler struct {
	log    *Log
	logger *slog.Logger
	// Keepalive is the interval of SSE comment lines that keep proxies from
	// closing an idle stream.
	Keepalive time.Duration
}

// NewHandler returns the events API over log.
func NewHandler(log *Log, logger *slog.Logger) *Handler {
	return &Handler{log: log, logger: logger, Keepalive: 15 * time.Second}
}

// Register adds the events routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /events/sandboxes/{id}", h.listSandbox)
	mux.HandleFunc("GET /events/sandboxes", h.listTeam)
	mux.HandleFunc("GET /events/stream", h.stream)
}

func team(r *http.Request) (string, error) {
	return auth.TeamID(r.Context())
}

// ParseTypes reads the `types` query parameter, repeated (types=a&types=b)
// or comma-separated (types=a,b), and rejects unknown types.
func ParseTypes(q []string, param string) ([]string, error) {
	out := query.List(q)
	for _, t := range out {
		if !KnownType(t) {
			return nil, errdefs.Invalid("unknown event type %q in %s; known types: %s", t, param, strings.Join(Types, ", "))
		}
	}
	return out, nil
}

func parseListFilter(r *http.Request) (Filter, error) {
	q := r.URL.Query()
	f := Filter{Limit: 10}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return f, errdefs.Invalid("offset must be an integer >= 0, got %q", v)
		}
		f.Offset = n
	}
	var err error
	if f.Limit, err = query.Limit(q, f.Limit, 100); err != nil {
		return f, err
	}
	if f.OrderAsc, err = query.Bool(q, "orderAsc"); err != nil {
		return f, err
	}
	if f.Types, err = ParseTypes(q["types"], "types"); err != nil {
		return f, err
	}
	return f, nil
}

func (h *Handler) listSandbox(w http.ResponseWriter, r *http.Request) {
	h.list(w, r, r.PathValue("id"))
}

func (h *Handler) listTeam(w http.ResponseWriter, r *http.Request) { h.list(w, r, "") }

func (h *Handler) list(w http.ResponseWriter, r *http.Request, sandboxID string) {
	teamID, err := team(r)
	if err != nil {
		errdefs.WriteHTTP(w, h.logger, err)
		return
	}
	f, err := parseListFilter(r)
	if err != nil {
		errdefs.WriteHTTP(w, h.logger, err)
		return
	}
	f.TeamID, f.SandboxID = teamID, sandboxID
	evs, err := h.log.List(r.Context(), f)
	if err != nil {
		errdefs.WriteHTTP(w, h.logger, err)
		return
	}
	out := make([]JSON, 0, len(evs))
	for i := range evs {
		out = append(out, evs[i].ToJSON())
	}
	errdefs.WriteJSON(w, http.StatusOK, out)
}

// stream serves Server-Sent Events: one `event: <type>`, `id: <seq>`,
// `data: <event JSON>` record per event of the caller's team. A client
// resumes after a disconnect with the Last-Event-ID header (browsers'
// EventSource send it) or ?lastEventId=; without either the stream starts
// at the current end of the log.
func (h *Handler) stream(w http.ResponseWriter, r *http.Request) {
	teamID, err := team(r)
	if err != nil {
		errdefs.WriteHTTP(w, h.logger, err)
		return
	}
	q := r.URL.Query()
	types, err := ParseTypes(q["types"], "types")
	if err != nil {
		errdefs.WriteHTTP(w, h.logger, err)
		return
	}
	f := Filter{TeamID: teamID, SandboxID: q.Get("sandboxId"), Types: types}
	after := int64(-1)
	for _, v := range []string{r.Header.Get("Last-Event-ID"), q.Get("lastEventId")} {
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			errdefs.WriteHTTP(w, h.logger, errdefs.Invalid("Last-Event-ID must be a sequence number (the id: of a received event), got %q", v))
			return
		}
		after = n
		break
	}
	ctx := r.Context()
	last, err := h.log.LastSeq(ctx)
	if err != nil {
		errdefs.WriteHTTP(w, h.logger, err)
		return
	}
	// No id: start live. An id beyond the log (a client of a server whose
	// database was reset) would otherwise wait forever.
	if after < 0 || after > last {
		after = last
	}
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{}) // a stream outlives the server's write timeout
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, ": sbx event stream\n\n"); err != nil {
		return
	}
	_ = rc.Flush()

	keep := time.NewTicker(h.Keepalive)
	defer keep.Stop()
	for {
		ch := h.log.Changed()
		evs, err := h.log.After(ctx, after, 500, f)
		if err != nil {
			h.logger.Warn("event stream read failed", "err", err)
			return
		}
		for i := range evs {
			data, _ := json.Marshal(evs[i].ToJSON())
			if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", evs[i].Seq, evs[i].Type, data); err != nil {
				return
			}
			after = evs[i].Seq
		}
		if len(evs) > 0 {
			if rc.Flush() != nil {
				return
			}
			if len(evs) == 500 {
				continue
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-keep.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}
