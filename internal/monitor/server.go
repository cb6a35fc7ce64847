package monitor

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/sbxdev/sbx/internal/analytics"
	"github.com/sbxdev/sbx/internal/budget"
	"github.com/sbxdev/sbx/internal/dashboard"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/history"
	"github.com/sbxdev/sbx/internal/metrics"
	"github.com/sbxdev/sbx/internal/runaway"
	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/usage"
)

// Teams lists teams, to let runaway policies name a team, and finds one,
// to check a team the admin names.
type Teams interface {
	Teams(ctx context.Context) ([]store.Team, error)
	Team(ctx context.Context, id string) (store.Team, error)
}

// Server is the monitoring of `sbx serve`.
type Server struct {
	cfg     Config
	log     *slog.Logger
	Usage   *usage.Service
	Budgets *budget.Budgets
	Runaway *runaway.Detector
	Metrics *metrics.Metrics
	History *history.History
	sbx     attached // the manager, once attached
	evlog   *events.Log
	teams   Teams
	routes  []func(mux *http.ServeMux)

	historyHandler *history.Handler
}

// Store is what a server's monitoring keeps in the database: budgets and
// the webhook delivery counts it exports (sqlstore.Store).
type Store interface {
	budget.Repository
	metrics.WebhookCounts
}

// ForServer builds the monitoring of a server, before its sandbox manager:
// the wiring passes Budgets (the manager's admission) and Metrics (its
// observer) to sandbox.New, then gives the manager to Attach. cfg must be
// validated. Call Start to run the periodic checks, Register (via api.New)
// for the REST routes and AddPublic for the dashboard.
func ForServer(ctx context.Context, cfg Config, st Store, evlog *events.Log, teams Teams, log *slog.Logger) (*Server, error) {
	log = log.With("component", "monitor")
	s := &Server{cfg: cfg, log: log, evlog: evlog, teams: teams}
	s.Usage = usage.NewService(evlog, cfg.Rates, s.sbx.Live)
	s.Metrics = metrics.New(&s.sbx, st, log)
	b, err := budget.NewWithRepository(ctx, st, evlog, s.Usage, &s.sbx, log)
	if err != nil {
		return nil, err
	}
	b.OnRefusal, b.OnAction = s.Metrics.OnBudgetRefusal, s.Metrics.OnBudgetAction
	if teams != nil {
		b.TeamExists = func(ctx context.Context, id string) error { _, err := teams.Team(ctx, id); return err }
	}
	s.Budgets = b
	return s, nil
}

// Attach gives the monitoring the sandbox manager it watches, before
// Start and Register: runaway detection, history and the per-sandbox
// routes work on it.
func (s *Server) Attach(mgr *sandbox.Manager) {
	s.sbx.p.Store(mgr)
	s.Runaway = runaway.New(s.cfg.Policies(), mgr, mgr, s.evlog, s.log)
	s.Runaway.OnAction = s.Metrics.OnRunawayAction
	s.Runaway.TeamName = teamNamer(s.teams)
	s.History = history.New(mgr, s.cfg.MetricsInterval, s.cfg.MetricsRetention, s.log)
	s.historyHandler = history.NewHandler(s.History, mgr, s.log)
	s.routes = append(s.routes, s.historyHandler.Register, usage.NewHandler(s.Usage, mgr, s.log).Register, s.Budgets.Register,
		analytics.NewHandler(analytics.New(s.Usage), s.log).Register, s.Metrics.Register)
	for _, p := range s.cfg.Policies() {
		s.log.Info("runaway policy", "policy", p.String())
	}
}

// attached is the sandbox manager as the parts built before it (usage,
// metrics, budgets) reach it: empty until Attach, when nothing creates
// sandboxes yet (the API is not serving).
type attached struct {
	p atomic.Pointer[sandbox.Manager]
}

// Live lists the manager's sandboxes (none before Attach).
func (a *attached) Live() []store.Sandbox {
	if m := a.p.Load(); m != nil {
		return m.Live()
	}
	return nil
}

// KillWithReason kills through the manager.
func (a *attached) KillWithReason(ctx context.Context, id, reason string) error {
	m := a.p.Load()
	if m == nil {
		return errdefs.Unavailable("the sandbox manager is not running yet")
	}
	return m.KillWithReason(ctx, id, reason)
}

// PauseWithReason pauses through the manager.
func (a *attached) PauseWithReason(ctx context.Context, id, reason string) error {
	m := a.p.Load()
	if m == nil {
		return errdefs.Unavailable("the sandbox manager is not running yet")
	}
	return m.PauseWithReason(ctx, id, reason)
}

// Register adds the authenticated routes (usage, budgets, analytics,
// metrics).
func (s *Server) Register(mux *http.ServeMux) {
	for _, r := range s.routes {
		r(mux)
	}
}

// AdminPatterns are the routes the admin key calls for the whole server
// (api.AdminRoutes): every team's budget and metrics.
func (s *Server) AdminPatterns() []string {
	return append(append(s.Budgets.AdminPatterns(), s.historyHandler.AdminPatterns()...), "GET /metrics")
}

// AnonymousPatterns are the routes served without an API key
// (api.AnonymousRoutes): /metrics with --metrics-public, where an
// anonymous scrape sees only the series that name no team.
func (s *Server) AnonymousPatterns() []string {
	if s.cfg.MetricsPublic {
		return []string{"GET /metrics"}
	}
	return nil
}

// Public is where routes without an API key go (*api.Server), and the
// API the dashboard forwards its signed-in calls to.
type Public interface {
	AddPublic(pattern string, h http.Handler)
	http.Handler
}

// AddPublic registers the dashboard.
func (s *Server) AddPublic(p Public) {
	dashboard.Register(p, p, s.log)
}

// Start runs the budget and runaway checks until ctx ends; the returned
// channel is closed when they have stopped.
func (s *Server) Start(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); s.Budgets.Run(ctx, s.cfg.BudgetInterval) }()
	go func() { defer wg.Done(); s.History.Run(ctx) }()
	go func() { defer wg.Done(); s.Runaway.Run(ctx, s.cfg.RunawayInterval) }()
	go func() { wg.Wait(); close(done) }()
	return done
}

func teamNamer(teams Teams) func(ctx context.Context, id string) string {
	if teams == nil {
		return nil
	}
	return func(ctx context.Context, id string) string {
		ts, err := teams.Teams(ctx)
		if err != nil {
			return ""
		}
		for _, t := range ts {
			if t.ID == id {
				return t.Name
			}
		}
		return ""
	}
}
