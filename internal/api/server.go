// Package api is sbx's control-plane REST API, compatible with E2B's
// (paths, JSON shapes, status codes), plus the dispatch of sandbox traffic
// to the proxy. Errors are written only through errdefs.WriteHTTP.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/proxy"
	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/template"
)

// maxBody bounds control-plane request bodies.
const maxBody = 1 << 20

// Sandboxes is the sandbox manager as the API uses it.
type Sandboxes interface {
	Create(ctx context.Context, req sandbox.CreateRequest) (store.Sandbox, error)
	Get(ctx context.Context, teamID, id string) (store.Sandbox, error)
	List(ctx context.Context, f store.ListFilter) ([]store.Sandbox, error)
	Kill(ctx context.Context, teamID, id string) error
	SetTimeout(ctx context.Context, teamID, id string, timeout time.Duration) error
	Connect(ctx context.Context, teamID, id string, timeout time.Duration) (store.Sandbox, bool, error)
	Metrics(ctx context.Context, teamID, id string) ([]sandbox.Metric, error)
	Pause(ctx context.Context, teamID, id string) error
}

// Templates lists templates for a team.
type Templates interface {
	List(teamID string) []template.Template
	Get(ref string) (template.Template, bool)
}

// Keys resolves API keys to teams.
type Keys interface {
	TeamByAPIKey(ctx context.Context, apiKey string) (store.Team, error)
}

// Registrar adds more authenticated routes (events, webhooks, ...).
type Registrar interface {
	Register(mux *http.ServeMux)
}

// Server serves the REST API and dispatches sandbox traffic.
type Server struct {
	log       *slog.Logger
	sandboxes Sandboxes
	templates Templates
	keys      Keys
	proxy     *proxy.Proxy
	mux       *http.ServeMux
	public    *http.ServeMux

	teamCache sync.Map // key hash -> auth.Team
}

// New builds the API server. extra registrars add authenticated routes.
func New(log *slog.Logger, sb Sandboxes, tpl Templates, keys Keys, px *proxy.Proxy, extra ...Registrar) *Server {
	s := &Server{log: log, sandboxes: sb, templates: tpl, keys: keys, proxy: px,
		mux: http.NewServeMux(), public: http.NewServeMux()}
	s.public.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "Health check successful\n")
	})
	s.routes()
	for _, r := range extra {
		r.Register(s.mux)
	}
	return s
}

// AddPublic registers a route that needs no API key (dashboards, health).
func (s *Server) AddPublic(pattern string, h http.Handler) { s.public.Handle(pattern, h) }

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("POST /sandboxes", s.createV1)
	m.HandleFunc("POST /v2/sandboxes", s.createV2)
	m.HandleFunc("GET /sandboxes", s.listV1)
	m.HandleFunc("GET /v2/sandboxes", s.listV2)
	m.HandleFunc("GET /sandboxes/{id}", s.get)
	m.HandleFunc("DELETE /sandboxes/{id}", s.kill)
	m.HandleFunc("POST /sandboxes/{id}/timeout", s.setTimeout)
	m.HandleFunc("POST /sandboxes/{id}/connect", s.connect)
	m.HandleFunc("POST /v2/sandboxes/{id}/connect", s.connect)
	m.HandleFunc("GET /sandboxes/{id}/metrics", s.metrics)
	m.HandleFunc("POST /sandboxes/{id}/pause", s.pause)
	m.HandleFunc("POST /sandboxes/{id}/resume", s.resume)
	m.HandleFunc("GET /templates", s.listTemplates)
	m.HandleFunc("GET /v2/templates", s.listTemplates)
	m.HandleFunc("GET /templates/aliases/{alias}", s.templateAlias)
}

// ServeHTTP routes sandbox traffic to the proxy and everything else to the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if t, ok, err := s.proxy.Match(r); ok {
		if err != nil {
			proxy.BadRequest(w, err)
			return
		}
		s.proxy.Serve(w, r, t)
		return
	}
	if h, pattern := s.public.Handler(r); pattern != "" {
		h.ServeHTTP(w, r)
		return
	}
	team, err := s.authenticate(r)
	if err != nil {
		errdefs.WriteHTTP(w, s.log, err)
		return
	}
	r = r.WithContext(auth.WithTeam(r.Context(), team))
	if _, pattern := s.mux.Handler(r); pattern == "" {
		errdefs.WriteHTTP(w, nil, errdefs.NotFound("no such endpoint: %s %s", r.Method, r.URL.Path))
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) authenticate(r *http.Request) (auth.Team, error) {
	key := r.Header.Get("X-API-Key")
	if key == "" {
		if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && strings.HasPrefix(b, "e2b_") {
			key = b
		}
	}
	if key == "" {
		return auth.Team{}, errdefs.Unauthenticated("missing API key: send it in the X-API-Key header (see `sbx env`)")
	}
	if t, ok := s.teamCache.Load(key); ok {
		return t.(auth.Team), nil
	}
	t, err := s.keys.TeamByAPIKey(r.Context(), key)
	if errors.Is(err, errdefs.ErrNotFound) {
		return auth.Team{}, errdefs.Unauthenticated("invalid API key: check E2B_API_KEY (print the right one with `sbx env`)")
	}
	if err != nil {
		return auth.Team{}, err
	}
	at := auth.Team{ID: t.ID, Name: t.Name}
	s.teamCache.Store(key, at)
	return at, nil
}

func team(r *http.Request) auth.Team {
	t, _ := auth.TeamFrom(r.Context())
	return t
}

// decode reads a JSON body into v; an empty body leaves v unchanged.
func decode(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return errdefs.Invalid("read request body: %v", err)
	}
	if len(body) > maxBody {
		return errdefs.Invalid("request body is larger than %d bytes", maxBody)
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return errdefs.Invalid("malformed JSON body: %v", jsonError(err))
	}
	return nil
}

func jsonError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d: %v", se.Offset, se)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q must be %s, got %s", te.Field, te.Type, te.Value)
	}
	return err.Error()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) fail(w http.ResponseWriter, err error) { errdefs.WriteHTTP(w, s.log, err) }
