// Package api is sbx's control-plane REST API, compatible with E2B's
// (paths, JSON shapes, status codes), plus the dispatch of sandbox traffic
// to the proxy. Errors are written only through errdefs.WriteHTTP.
package api

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/proxy"
	"github.com/sbxdev/sbx/internal/request"
	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/telemetry"
	"github.com/sbxdev/sbx/internal/template"
)

// Sandboxes is the sandbox manager as the API uses it.
type Sandboxes interface {
	Create(ctx context.Context, req sandbox.CreateRequest) (store.Sandbox, error)
	Get(ctx context.Context, teamID, id string) (store.Sandbox, error)
	List(ctx context.Context, f store.ListFilter) ([]store.Sandbox, error)
	Kill(ctx context.Context, teamID, id string) error
	SetTimeout(ctx context.Context, teamID, id string, timeout time.Duration) error
	Connect(ctx context.Context, teamID, id string, timeout time.Duration) (store.Sandbox, bool, error)
	Pause(ctx context.Context, teamID, id string) error
}

// Templates lists templates for a team.
type Templates interface {
	List(teamID string) []template.Template
	Get(ref string) (template.Template, bool)
}

// Keys resolves API keys to their owner (a team or the admin).
type Keys interface {
	ResolveAPIKey(ctx context.Context, apiKey string) (key store.APIKey, team store.Team, admin bool, err error)
	TouchAPIKey(ctx context.Context, id string, t time.Time) error
	Team(ctx context.Context, id string) (store.Team, error)
}

// Accounts is Keys plus the management of teams and keys (the store).
type Accounts interface {
	Keys
	CreateTeam(ctx context.Context, name, apiKey string) (store.Team, error)
	Teams(ctx context.Context) ([]store.Team, error)
	SetTeamMaxSandboxes(ctx context.Context, teamID string, max *int) error
	DeleteTeam(ctx context.Context, teamID string) error
	CreateAPIKey(ctx context.Context, teamID, name, apiKey string) (store.APIKey, error)
	APIKeys(ctx context.Context, teamID string) ([]store.APIKey, error)
	APIKey(ctx context.Context, id string) (store.APIKey, error)
	RenameAPIKey(ctx context.Context, id, name string) error
	DeleteAPIKey(ctx context.Context, id string, force bool) error
}

// Registrar adds more authenticated routes (events, webhooks, ...).
type Registrar interface {
	Register(mux *http.ServeMux)
}

// AdminRoutes is implemented by registrars with routes the admin key may
// call without naming a team (X-Team-ID): cluster-wide views and settings.
// Every other route needs a team and answers the bare admin key 403.
type AdminRoutes interface {
	AdminPatterns() []string
}

// AnonymousRoutes is implemented by registrars with routes that also serve
// requests without any API key (their handlers then see no caller in the
// context). A request that sends a key is authenticated as usual.
type AnonymousRoutes interface {
	AnonymousPatterns() []string
}

// Server serves the REST API and dispatches sandbox traffic.
type Server struct {
	log          *slog.Logger
	sandboxes    Sandboxes
	templates    Templates
	accounts     Accounts
	proxy        *proxy.Proxy
	mux          *http.ServeMux
	public       *http.ServeMux
	keys         *keyCache
	admin        map[string]bool  // patterns the admin key may call without a team
	anonymous    map[string]bool  // patterns served without a key too
	creates      createCounts     // sandbox creates through this API (nodes.go)
	builds       buildCanceller   // the template service, for the admin (nodes.go)
	net          *networking      // nil until SetNetworking
	secrets      Secrets          // nil until SetSecrets
	volumes      Volumes          // nil until SetVolumes
	cleanups     []teamCleanup    // data removed with a team (OnTeamDeleted)
	snapCap      snapshotCap      // --team-max-snapshots
	snapList     snapshotLister   // nil: the Sandboxes' (SetSnapshotList)
	cluster      ClusterVerifier  // set on a --role node: only api replicas are served (cluster.go)
	forwarder    SandboxForwarder // set on a --role api: node-side sandbox routes go to the node (cluster.go)
	clusterNodes ClusterNodes     // set on a --role api: /nodes lists the cluster's nodes (clusternodes.go)
}

// New builds the API server. extra registrars add authenticated routes.
func New(log *slog.Logger, sb Sandboxes, tpl Templates, accounts Accounts, px *proxy.Proxy, extra ...Registrar) *Server {
	s := &Server{log: log, sandboxes: sb, templates: tpl, accounts: accounts, proxy: px,
		mux: http.NewServeMux(), public: http.NewServeMux(), keys: newKeyCache(accounts, log), admin: map[string]bool{}, anonymous: map[string]bool{}}
	s.public.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "Health check successful\n")
	})
	s.routes()
	s.accountRoutes()
	s.nodeRoutes()
	s.accessTokenRoutes()
	for _, r := range extra {
		r.Register(s.mux)
		if a, ok := r.(AdminRoutes); ok {
			for _, p := range a.AdminPatterns() {
				s.admin[p] = true
			}
		}
		if a, ok := r.(AnonymousRoutes); ok {
			for _, p := range a.AnonymousPatterns() {
				s.anonymous[p] = true
			}
		}
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
	m.HandleFunc("GET /sandboxes/{id}/logs", s.logsV1)
	m.HandleFunc("GET /v2/sandboxes/{id}/logs", s.logsV2)
	m.HandleFunc("POST /sandboxes/{id}/refreshes", s.refresh)
	m.HandleFunc("POST /sandboxes/{id}/pause", s.pause)
	m.HandleFunc("POST /sandboxes/{id}/resume", s.resume)
	m.HandleFunc("GET /templates", s.listTemplates)
	m.HandleFunc("GET /v2/templates", s.listTemplates)
	m.HandleFunc("GET /templates/aliases/{alias}", s.templateAlias)
	s.lifecycleRoutes() // snapshots, fork (lifecycle.go)
	m.HandleFunc("PUT /sandboxes/{id}/network", s.updateNetwork)
}

// ServeHTTP routes sandbox traffic to the proxy and everything else to the
// API. Each branch names its route for the access log, metrics and traces
// (telemetry.SetRoute): a pattern or a fixed word, never a path.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.cluster != nil {
		s.serveNode(w, r)
		return
	}
	ctx := r.Context()
	if t, ok, err := s.proxy.Match(r); ok {
		telemetry.SetRoute(ctx, "proxy")
		if err != nil {
			proxy.BadRequest(w, err)
			return
		}
		if !s.gate(w, r, t) {
			return
		}
		s.proxy.Serve(w, r, t)
		return
	}
	if _, pattern := s.public.Handler(r); pattern != "" {
		telemetry.SetRoute(ctx, pattern)
		s.public.ServeHTTP(w, r) // through the mux: it sets the path values
		return
	}
	_, pattern := s.mux.Handler(r)
	telemetry.SetRoute(ctx, pattern)
	if apiKey(r) == "" && s.anonymous[pattern] {
		s.mux.ServeHTTP(w, r)
		return
	}
	team, err := s.authenticate(r)
	if err != nil {
		errdefs.WriteHTTP(w, s.log, err)
		return
	}
	r = r.WithContext(auth.WithTeam(ctx, team))
	if s.forwardToNode(w, r, team) {
		return
	}
	if pattern == "" {
		errdefs.WriteHTTP(w, nil, errdefs.NotFound("no such endpoint: %s %s", r.Method, r.URL.Path))
		return
	}
	// The admin key is nobody's team: without X-Team-ID it reaches only the
	// cluster-wide routes, never a handler that would read its empty team
	// ID as "no team" (built-in templates have no team either).
	if team.Admin && team.ID == "" && !s.admin[pattern] {
		errdefs.WriteHTTP(w, nil, auth.ErrAdminNeedsTeam)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// authenticate resolves the request's API key (X-API-Key, or a Bearer
// e2b_/sbx_admin_ token) and its X-Team-ID, which only the admin key may
// set to another team than its own.
func (s *Server) authenticate(r *http.Request) (auth.Team, error) {
	key := apiKey(r)
	if key == "" {
		return auth.Team{}, errdefs.Unauthenticated("missing API key: send it in the X-API-Key header (see `sbx env`)")
	}
	t, err := s.keys.resolve(r.Context(), key)
	if err != nil {
		return auth.Team{}, err
	}
	want := r.Header.Get("X-Team-ID")
	switch {
	case want == "" || want == t.ID:
		return t, nil
	case !t.Admin:
		return auth.Team{}, errdefs.Denied("X-Team-ID %q is not your team: a team's API key acts only on its own team", truncate(want, 64))
	}
	other, err := s.accounts.Team(r.Context(), want)
	if err != nil {
		return auth.Team{}, err
	}
	t.ID, t.Name = other.ID, other.Name
	return t, nil
}

// apiKey is the key a request sends: X-API-Key, or a Bearer token of a
// team (e2b_, or an access token sk_e2b_, as E2B's legacy clients send
// them) or the admin (sbx_admin_, as Prometheus sends a bearer token).
func apiKey(r *http.Request) string {
	if key := r.Header.Get("X-API-Key"); key != "" {
		return key
	}
	if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok &&
		(strings.HasPrefix(b, "e2b_") || strings.HasPrefix(b, auth.AccessTokenPrefix) || strings.HasPrefix(b, auth.AdminKeyPrefix)) {
		return b
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func team(r *http.Request) auth.Team {
	t, _ := auth.TeamFrom(r.Context())
	return t
}

// decode reads a JSON body of at most limit bytes into v (request.Decode).
func decode(r *http.Request, v any, limit int64) error { return request.Decode(r, v, limit) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) fail(w http.ResponseWriter, err error) { errdefs.WriteHTTP(w, s.log, err) }
