package template

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/builder"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/request"
)

// E2B's deprecated template routes, for older SDKs and CLIs:
//
//   - POST /templates and POST /templates/{id} (TemplateBuildRequest: a
//     Dockerfile) create or rebuild a template. E2B's CLI then pushed a
//     Docker image and called POST /templates/{id}/builds/{buildID}; sbx
//     has no image registry, so it parses the Dockerfile (the same parser
//     as `sbx template build`) and starts the build at once. COPY and ADD
//     need build files, which this form cannot carry: they are refused.
//   - POST /templates/{id}/builds/{buildID} starts a waiting build (from
//     base) and is a no-op for one already started.
//   - POST /v2/templates (TemplateBuildRequestV2) registers a build like
//     POST /v3/templates and answers TemplateLegacy.

// legacyBuildRequest is E2B's TemplateBuildRequest (and V2, a subset).
type legacyBuildRequest struct {
	Alias      string `json:"alias"`
	Dockerfile string `json:"dockerfile"`
	TeamID     string `json:"teamID"`
	StartCmd   string `json:"startCmd"`
	ReadyCmd   string `json:"readyCmd"`
	CPUCount   int    `json:"cpuCount"`
	MemoryMB   int    `json:"memoryMB"`
}

// LegacyJSON is E2B's TemplateLegacy, the shape of a template in the
// legacy create answers and (with its build status) in template lists.
type LegacyJSON struct {
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
}

func toLegacyJSON(rec Record, buildID string) LegacyJSON {
	names := rec.Names
	if names == nil {
		names = []string{}
	}
	return LegacyJSON{TemplateID: rec.ID, BuildID: buildID, CPUCount: rec.CPUCount, MemoryMB: rec.MemoryMB,
		DiskSizeMB: rec.DiskMB, Public: rec.Public, Aliases: names, Names: names, CreatedAt: rec.CreatedAt,
		UpdatedAt: rec.UpdatedAt, BuildCount: rec.BuildCount, EnvdVersion: EnvdVersion}
}

// EnvdVersion is what legacy template answers report: sandbox.EnvdVersion,
// which cannot be imported (sandbox imports this package); internal/api
// tests that the two agree.
const EnvdVersion = "0.6.13"

// checkTeam refuses a body naming another team than the caller's.
func checkTeam(r *http.Request, bodyTeam string) error {
	if bodyTeam != "" && bodyTeam != teamID(r) {
		return errdefs.Denied("teamID %q is not your team: a team's key builds only its own templates", bodyTeam)
	}
	return nil
}

// DockerfileBuild registers a build of the team's template name (created if
// new) from a Dockerfile and starts it.
func (s *Service) DockerfileBuild(ctx context.Context, teamID, name string, req legacyBuildRequest) (Record, string, error) {
	if strings.TrimSpace(req.Dockerfile) == "" {
		return Record{}, "", errdefs.Invalid("dockerfile is required: the Dockerfile's text")
	}
	plan, err := builder.Parse(strings.NewReader(req.Dockerfile), builder.ParseOptions{})
	if err != nil {
		return Record{}, "", err
	}
	start := StartRequest{StartCmd: plan.StartCmd, ReadyCmd: req.ReadyCmd}
	if req.StartCmd != "" {
		start.StartCmd = req.StartCmd
	}
	switch {
	case plan.FromImage:
		start.FromImage = plan.From
	case builder.TemplateBase(plan.From) != "":
		start.FromTemplate = builder.TemplateBase(plan.From)
	default:
		start.FromTemplate = plan.From
	}
	for _, st := range plan.Steps {
		if st.HasFiles() {
			return Record{}, "", errdefs.Invalid("Dockerfile line %d: %s needs build files, which this legacy endpoint cannot receive; build with the SDK's Template.build or `sbx template build`", st.Line, strings.ToUpper(st.Type))
		}
		start.Steps = append(start.Steps, st)
	}
	rec, buildID, err := s.Request(ctx, teamID, RequestV3{Name: name, CPUCount: req.CPUCount, MemoryMB: req.MemoryMB})
	if err != nil {
		return Record{}, "", err
	}
	if err := s.Start(ctx, teamID, rec.ID, buildID, start); err != nil {
		return Record{}, "", err
	}
	return rec, buildID, nil
}

// createLegacy serves POST /templates.
func (h *Handler) createLegacy(w http.ResponseWriter, r *http.Request) {
	var req legacyBuildRequest
	if err := request.Decode(r, &req, 2<<20); err != nil {
		h.fail(w, err)
		return
	}
	if err := checkTeam(r, req.TeamID); err != nil {
		h.fail(w, err)
		return
	}
	if req.Alias == "" {
		h.fail(w, errdefs.Invalid("alias is required: the template's name"))
		return
	}
	rec, buildID, err := h.svc.DockerfileBuild(r.Context(), teamID(r), req.Alias, req)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, toLegacyJSON(rec, buildID))
}

// rebuildLegacy serves POST /templates/{id}: a new build of the template.
func (h *Handler) rebuildLegacy(w http.ResponseWriter, r *http.Request) {
	var req legacyBuildRequest
	if err := request.Decode(r, &req, 2<<20); err != nil {
		h.fail(w, err)
		return
	}
	if err := checkTeam(r, req.TeamID); err != nil {
		h.fail(w, err)
		return
	}
	id, err := h.svc.idOf(teamID(r), r.PathValue("id"))
	if err != nil {
		h.fail(w, err)
		return
	}
	rec, err := h.svc.owned(r.Context(), teamID(r), id)
	if err != nil {
		h.fail(w, err)
		return
	}
	if len(rec.Names) == 0 {
		h.fail(w, errdefs.Precondition("template %s has no name to rebuild under; build it with POST /v3/templates", rec.ID))
		return
	}
	rec, buildID, err := h.svc.DockerfileBuild(r.Context(), teamID(r), rec.Names[0], req)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, toLegacyJSON(rec, buildID))
}

// requestV2 serves POST /v2/templates: a waiting build, as POST /v3/templates.
func (h *Handler) requestV2(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Alias    string `json:"alias"`
		TeamID   string `json:"teamID"`
		CPUCount int    `json:"cpuCount"`
		MemoryMB int    `json:"memoryMB"`
	}
	if err := request.Decode(r, &req, request.SmallBody); err != nil {
		h.fail(w, err)
		return
	}
	if err := checkTeam(r, req.TeamID); err != nil {
		h.fail(w, err)
		return
	}
	if req.Alias == "" {
		h.fail(w, errdefs.Invalid("alias is required: the template's name"))
		return
	}
	rec, buildID, err := h.svc.Request(r.Context(), teamID(r), RequestV3{Alias: req.Alias, CPUCount: req.CPUCount, MemoryMB: req.MemoryMB})
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, toLegacyJSON(rec, buildID))
}

// startLegacy serves POST /templates/{id}/builds/{buildID}.
func (h *Handler) startLegacy(w http.ResponseWriter, r *http.Request) {
	id, buildID := r.PathValue("id"), r.PathValue("buildID")
	if _, err := h.svc.owned(r.Context(), teamID(r), id); err != nil {
		h.fail(w, err)
		return
	}
	b, err := h.svc.store.Build(r.Context(), buildID)
	if err != nil || b.TemplateID != id {
		h.fail(w, errdefs.NotFound("build %q of template %q not found", buildID, id))
		return
	}
	if b.Status == StatusWaiting {
		if err := h.svc.Start(r.Context(), teamID(r), id, buildID, StartRequest{}); err != nil {
			h.fail(w, err)
			return
		}
	}
	w.WriteHeader(http.StatusAccepted)
}
