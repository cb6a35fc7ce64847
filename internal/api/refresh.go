package api

import (
	"net/http"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/request"
	"github.com/sbxdev/sbx/internal/store"
)

// maxRefresh is the spec's bound on a refresh's duration (one hour).
const maxRefresh = time.Hour

// defaultRefresh is E2B's keep-alive when the body names no duration.
const defaultRefresh = 15 * time.Second

// refresh serves POST /sandboxes/{id}/refreshes: keep the sandbox alive for
// duration seconds from now. Unlike set-timeout it only extends: a sandbox
// already due to end later keeps its end.
func (s *Server) refresh(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Duration *int64 `json:"duration"`
	}
	if err := decode(r, &body, request.SmallBody); err != nil {
		s.fail(w, err)
		return
	}
	d := defaultRefresh
	if body.Duration != nil {
		var err error
		if d, err = request.Seconds("duration", *body.Duration, maxRefresh); err != nil {
			s.fail(w, err)
			return
		}
	}
	sb, err := s.sandboxes.Get(r.Context(), team(r).ID, r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	if sb.State == store.StateKilled {
		s.fail(w, errdefs.NotFound("sandbox %s not found (it was killed)", sb.ID))
		return
	}
	if time.Now().Add(d).After(sb.EndAt) {
		if err := s.sandboxes.SetTimeout(r.Context(), team(r).ID, sb.ID, d); err != nil {
			s.fail(w, err)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}
