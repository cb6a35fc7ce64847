package template

import (
	"context"
	"net/http"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/request"
	"github.com/sbxdev/sbx/internal/store"
)

// SetPublic publishes a team's template (public: every team may create
// sandboxes from it, by ID or name) or makes it private again. ref is the
// template's ID or one of its names.
func (s *Service) SetPublic(ctx context.Context, teamID, ref string, public bool) (Record, error) {
	id, err := s.idOf(teamID, ref)
	if err != nil {
		return Record{}, err
	}
	rec, err := s.owned(ctx, teamID, id)
	if err != nil {
		return Record{}, err
	}
	rec.Public, rec.UpdatedAt = public, s.now().UTC()
	if err := s.store.UpdateTemplate(ctx, rec); err != nil {
		return Record{}, err
	}
	s.reg.setPublic(rec.ID, public)
	return rec, nil
}

// idOf resolves a template reference (ID or name, with an optional :tag)
// to the ID of a template the team may manage: built-in templates are
// nobody's to change.
func (s *Service) idOf(teamID, ref string) (string, error) {
	t, ok := s.reg.Get(ref)
	if !ok {
		return ref, nil // not registered (never built): the store decides
	}
	if t.TeamID == "" {
		return "", errdefs.Denied("template %q is built in: it cannot be changed or deleted", ref)
	}
	if t.TeamID != teamID {
		return "", errdefs.NotFound("template %q not found", ref)
	}
	return t.ID, nil
}

// setPublic changes a registered template's visibility. Template values
// handed out earlier are copies, so the entry is replaced, not mutated.
func (r *Registry) setPublic(id string, public bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.byID[id]; ok {
		c := *t
		c.Public = public
		r.byID[id] = &c
	}
}

// SpawnCounter reads how often each template was used (the store).
type SpawnCounter interface {
	TemplateSpawns(ctx context.Context) (map[string]store.TemplateSpawns, error)
}

// SetSpawns makes GET /templates/{id} report spawnCount and lastSpawnedAt.
func (h *Handler) SetSpawns(c SpawnCounter) { h.spawns = c }

// update serves PATCH /templates/{id} and /v2/templates/{id}: E2B's
// TemplateUpdateRequest, {"public": bool}.
func (h *Handler) update(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Public *bool `json:"public"`
	}
	if err := request.Decode(r, &req, request.SmallBody); err != nil {
		h.fail(w, err)
		return
	}
	if req.Public == nil {
		h.fail(w, errdefs.Invalid(`body must be {"public": true|false}`))
		return
	}
	rec, err := h.svc.SetPublic(r.Context(), teamID(r), r.PathValue("id"), *req.Public)
	if err != nil {
		h.fail(w, err)
		return
	}
	names := rec.Names
	if names == nil {
		names = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"templateID": rec.ID, "public": rec.Public, "names": names})
}
