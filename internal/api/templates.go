package api

import (
	"context"
	"net/http"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/template"
)

type templateJSON struct {
	TemplateID    string     `json:"templateID"`
	BuildID       string     `json:"buildID"`
	CPUCount      int        `json:"cpuCount"`
	MemoryMB      int        `json:"memoryMB"`
	DiskSizeMB    int        `json:"diskSizeMB"`
	Public        bool       `json:"public"`
	Aliases       []string   `json:"aliases"`
	Names         []string   `json:"names"`
	CreatedAt     time.Time  `json:"createdAt"`
	UpdatedAt     time.Time  `json:"updatedAt"`
	CreatedBy     *struct{}  `json:"createdBy"`
	LastSpawnedAt *time.Time `json:"lastSpawnedAt"`
	SpawnCount    int64      `json:"spawnCount"`
	BuildCount    int        `json:"buildCount"`
	EnvdVersion   string     `json:"envdVersion"`
	BuildStatus   string     `json:"buildStatus"`
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
	return templateJSON{TemplateID: t.ID, BuildID: t.BuildID, CPUCount: t.CPUCount, MemoryMB: t.MemoryMB,
		DiskSizeMB: t.DiskMB, Public: t.Public, Aliases: names, Names: names, CreatedAt: t.CreatedAt,
		UpdatedAt: t.UpdatedAt, BuildCount: 1, EnvdVersion: sandbox.EnvdVersion, BuildStatus: t.Status}
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
	out := make([]templateJSON, 0, len(ts))
	for _, t := range ts {
		j := toTemplateJSON(t)
		if sp, ok := spawns[t.ID]; ok {
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
