package api

import (
	"context"
	"encoding/base64"
	"net/http"
	"slices"
	"strconv"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/template"
)

type templateJSON struct {
	template.LegacyJSON
	BuildStatus string `json:"buildStatus"`
}

// spawnCounter reads how often each template was used (the store).
type spawnCounter interface {
	TemplateSpawns(ctx context.Context) (map[string]store.TemplateSpawns, error)
}

func toTemplateJSON(t template.Template) templateJSON {
	names := t.Names
	if names == nil {
		names = []string{}
	}
	return templateJSON{LegacyJSON: template.LegacyJSON{TemplateID: t.ID, BuildID: t.BuildID, CPUCount: t.CPUCount,
		MemoryMB: t.MemoryMB, DiskSizeMB: t.DiskMB, Public: t.Public, Aliases: names, Names: names,
		CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt, BuildCount: 1, EnvdVersion: sandbox.EnvdVersion},
		BuildStatus: t.Status}
}

func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request) {
	ts := s.templates.List(team(r).ID)
	var spawns map[string]store.TemplateSpawns
	if c, ok := s.accounts.(spawnCounter); ok {
		var err error
		if spawns, err = c.TemplateSpawns(r.Context()); err != nil {
			s.fail(w, err)
			return
		}
	}
	if r.URL.Path == "/v2/templates" {
		var next string
		var err error
		if ts, next, err = templatePage(r, ts); err != nil {
			s.fail(w, err)
			return
		}
		if next != "" {
			w.Header().Set("X-Next-Token", next)
		}
	}
	out := make([]templateJSON, 0, len(ts))
	for _, t := range ts {
		j := toTemplateJSON(t)
		// Only the team's own templates: a built-in template's count is
		// every team's, and its lastSpawnedAt would tell one team when
		// another created a sandbox.
		if sp, ok := spawns[t.ID]; ok && t.TeamID != "" {
			j.SpawnCount = sp.Count
			last := sp.Last
			j.LastSpawnedAt = &last
		}
		out = append(out, j)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) templateAlias(w http.ResponseWriter, r *http.Request) {
	alias := r.PathValue("alias")
	t, ok := s.templates.Get(alias)
	// Another team's private template answers exactly as a missing one:
	// a 403 would tell a tenant which names other teams use.
	if !ok || (t.TeamID != "" && t.TeamID != team(r).ID && !t.Public) {
		s.fail(w, errdefs.NotFound("template alias %q does not exist", alias))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"templateID": t.ID, "public": t.Public})
}

// templatePage cuts GET /v2/templates' page out of ts (oldest first):
// limit (1-100, default 100) templates after nextToken, and the token of
// the next page ("" after the last).
func templatePage(r *http.Request, ts []template.Template) ([]template.Template, string, error) {
	q := r.URL.Query()
	limit := 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 100 {
			return nil, "", errdefs.Invalid("limit must be between 1 and 100, got %q", truncate(l, 32))
		}
		limit = n
	}
	if tok := q.Get("nextToken"); tok != "" {
		id, err := base64.RawURLEncoding.DecodeString(tok)
		i := slices.IndexFunc(ts, func(t template.Template) bool { return t.ID == string(id) })
		if err != nil || i < 0 {
			return nil, "", errdefs.Invalid("invalid nextToken: it names no template of this list")
		}
		ts = ts[i+1:]
	}
	if len(ts) <= limit {
		return ts, "", nil
	}
	ts = ts[:limit]
	return ts, base64.RawURLEncoding.EncodeToString([]byte(ts[limit-1].ID)), nil
}
