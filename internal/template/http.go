package template

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/request"
)

// Handler serves E2B's template build API (protocol doc §1.6) over a Service.
type Handler struct {
	svc    *Service
	spawns SpawnCounter // nil: spawnCount 0
}

// NewHandler returns the API handler; register it with api.New as an extra
// Registrar and mount UploadPattern/Upload as a public route.
func NewHandler(svc *Service) *Handler { return &Handler{svc: svc} }

// UploadPattern is the public route the upload URLs point to; the URL's
// signature, not an API key, authorises the PUT (the SDK sends none).
const UploadPattern = "PUT /upload/templates/{hash}"

// Register adds the authenticated routes.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /v3/templates", h.request)
	mux.HandleFunc("GET /templates/{id}/files/{hash}", h.files)
	mux.HandleFunc("POST /v2/templates/{id}/builds/{buildID}", h.start)
	mux.HandleFunc("GET /templates/{id}/builds/{buildID}/status", h.status)
	mux.HandleFunc("DELETE /templates/{id}", h.delete)
	mux.HandleFunc("GET /templates/{id}", h.get)
	mux.HandleFunc("POST /templates", h.createLegacy)
	mux.HandleFunc("POST /templates/{id}", h.rebuildLegacy)
	mux.HandleFunc("POST /v2/templates", h.requestV2)
	mux.HandleFunc("POST /templates/{id}/builds/{buildID}", h.startLegacy)
	mux.HandleFunc("PATCH /templates/{id}", h.update)
	mux.HandleFunc("PATCH /v2/templates/{id}", h.update)
	mux.HandleFunc("GET /templates/{id}/builds/{buildID}/logs", h.buildLogs)
	mux.HandleFunc("POST /templates/tags", h.assignTags)
	mux.HandleFunc("DELETE /templates/tags", h.removeTags)
	// Not "GET /templates/{id}/tags": it would conflict with the API's
	// "GET /templates/aliases/{alias}" (both match /templates/aliases/tags),
	// which this pattern leaves more specific and so untouched.
	mux.HandleFunc("GET /templates/{id}/{sub}", h.templateSub)
}

// get answers E2B's TemplateWithBuilds.
func (h *Handler) get(w http.ResponseWriter, r *http.Request) {
	rec, builds, err := h.svc.Builds(r.Context(), teamID(r), r.PathValue("id"))
	if err != nil {
		h.fail(w, err)
		return
	}
	names := rec.Names
	if names == nil {
		names = []string{}
	}
	var spawnCount int64
	var lastSpawned *time.Time
	if h.spawns != nil && rec.TeamID != "" { // not a built-in's: every team's (api listTemplates)
		sp, err := h.spawns.TemplateSpawns(r.Context())
		if err != nil {
			h.fail(w, err)
			return
		}
		if n, ok := sp[rec.ID]; ok {
			spawnCount, lastSpawned = n.Count, &n.Last
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"templateID": rec.ID, "public": rec.Public, "aliases": names,
		"names": names, "createdAt": rec.CreatedAt, "updatedAt": rec.UpdatedAt, "lastSpawnedAt": lastSpawned,
		"spawnCount": spawnCount, "builds": builds})
}

func (h *Handler) fail(w http.ResponseWriter, err error) { errdefs.WriteHTTP(w, h.svc.log, err) }

func teamID(r *http.Request) string {
	t, _ := auth.TeamFrom(r.Context())
	return t.ID
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decodeJSON reads a JSON body of at most 8 MiB strictly: a field the
// endpoint does not know is refused with a 400 naming it, so an option an
// SDK relies on is never dropped in silence.
func decodeJSON(r *http.Request, v any) error { return request.Decode(r, v, 8<<20) }

func (h *Handler) request(w http.ResponseWriter, r *http.Request) {
	var req RequestV3
	if err := decodeJSON(r, &req); err != nil {
		h.fail(w, err)
		return
	}
	rec, buildID, err := h.svc.Request(r.Context(), teamID(r), req)
	if err != nil {
		h.fail(w, err)
		return
	}
	name := req.Name
	if name == "" {
		name = req.Alias
	}
	_, tag := SplitRef(name)
	extra, _ := buildTags(tag, req.Tags) // validated by Request
	tags := append([]string{DefaultTag}, extra...)
	writeJSON(w, http.StatusAccepted, map[string]any{"templateID": rec.ID, "buildID": buildID, "public": rec.Public,
		"names": rec.Names, "aliases": rec.Names, "tags": tags})
}

func (h *Handler) files(w http.ResponseWriter, r *http.Request) {
	id, hash := r.PathValue("id"), r.PathValue("hash")
	present, err := h.svc.FileStatus(r.Context(), teamID(r), id, hash)
	if err != nil {
		h.fail(w, err)
		return
	}
	out := map[string]any{"present": present}
	if !present {
		scheme := "http"
		if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
			scheme = "https"
		}
		u := url.URL{Scheme: scheme, Host: r.Host, Path: "/upload/templates/" + hash,
			RawQuery: h.svc.uploads.sign(teamID(r), hash, h.svc.now().Add(time.Hour))}
		out["url"] = u.String()
	}
	writeJSON(w, http.StatusCreated, out)
}

// Upload receives the tar of one COPY step's files.
func (h *Handler) Upload(w http.ResponseWriter, r *http.Request) {
	hash, q := r.PathValue("hash"), r.URL.Query()
	if hash == "" { // dispatched via mux.Handler, which sets no path values
		hash = strings.TrimPrefix(r.URL.Path, "/upload/templates/")
	}
	team := q.Get("team")
	if err := h.svc.uploads.verify(team, hash, q.Get("expires"), q.Get("signature"), h.svc.now()); err != nil {
		h.fail(w, err)
		return
	}
	if r.ContentLength > h.svc.uploads.max {
		h.fail(w, errdefs.TooLarge("%v", errTooLarge{h.svc.uploads.max}))
		return
	}
	n, err := h.svc.uploads.store(r.Context(), team, hash, r.Body)
	if err != nil {
		h.fail(w, err)
		return
	}
	h.svc.log.DebugContext(r.Context(), "template files uploaded", "team.id", team, "hash", hash, "entries", n)
	w.WriteHeader(http.StatusOK)
}

func (h *Handler) start(w http.ResponseWriter, r *http.Request) {
	var req StartRequest
	if err := decodeJSON(r, &req); err != nil {
		h.fail(w, err)
		return
	}
	if err := h.svc.Start(r.Context(), teamID(r), r.PathValue("id"), r.PathValue("buildID"), req); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

func (h *Handler) status(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	offset, _ := strconv.Atoi(q.Get("logsOffset"))
	limit, _ := strconv.Atoi(q.Get("limit"))
	st, err := h.svc.BuildStatus(r.Context(), teamID(r), r.PathValue("id"), r.PathValue("buildID"), offset, limit)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (h *Handler) delete(w http.ResponseWriter, r *http.Request) {
	if err := h.svc.deleteTemplateOrSnapshot(r.Context(), teamID(r), r.PathValue("id")); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) assignTags(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Target string   `json:"target"`
		Tags   []string `json:"tags"`
	}
	if err := decodeJSON(r, &req); err != nil {
		h.fail(w, err)
		return
	}
	if req.Target == "" {
		h.fail(w, errdefs.Invalid(`target is required: the build to tag as "name:tag" (or "name" for its latest build)`))
		return
	}
	buildID, tags, err := h.svc.AssignTags(r.Context(), teamID(r), req.Target, req.Tags)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"tags": tags, "buildID": buildID})
}

func (h *Handler) removeTags(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if err := decodeJSON(r, &req); err != nil {
		h.fail(w, err)
		return
	}
	if req.Name == "" {
		h.fail(w, errdefs.Invalid("name is required: the template whose tags to remove"))
		return
	}
	if err := h.svc.RemoveTags(r.Context(), teamID(r), req.Name, req.Tags); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// templateSub serves GET /templates/{id}/tags.
func (h *Handler) templateSub(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("sub") != "tags" {
		h.fail(w, errdefs.NotFound("no such endpoint: GET %s", r.URL.Path))
		return
	}
	tags, err := h.svc.Tags(r.Context(), teamID(r), r.PathValue("id"))
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, tags)
}
