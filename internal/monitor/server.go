package monitor

import (
	"context"
	"log/slog"
	"net/http"
	"sync"

	"github.com/sbxdev/sbx/internal/analytics"
	"github.com/sbxdev/sbx/internal/budget"
	"github.com/sbxdev/sbx/internal/dashboard"
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
	mgr     *sandbox.Manager
	routes  []func(mux *http.ServeMux)

	historyHandler *history.Handler
}

// Store is what a server's monitoring keeps in the database: budgets and
// the webhook delivery counts it exports (sqlstore.Store).
type Store interface {
	budget.Repository
	metrics.WebhookCounts
}

// ForServer builds the monitoring of a server: it installs the budget
// admission check on mgr. cfg must be validated. Call Start to run the
// periodic checks, Register (via api.New) for the REST routes and
// AddPublic for the dashboard.
func ForServer(ctx context.Context, cfg Config, st Store, evlog *events.Log, mgr *sandbox.Manager, teams Teams, log *slog.Logger) (*Server, error) {
	log = log.With("component", "monitor")
	s := &Server{cfg: cfg, log: log, mgr: mgr}
	s.Usage = usage.NewService(evlog, cfg.Rates, mgr.Live)
	s.Metrics = metrics.New(mgr, st, log)
	b, err := budget.NewWithRepository(ctx, st, evlog, s.Usage, mgr, log)
	if err != nil {
		return nil, err
	}
	b.OnRefusal, b.OnAction = s.Metrics.OnBudgetRefusal, s.Metrics.OnBudgetAction
	if teams != nil {
		b.TeamExists = func(ctx context.Context, id string) error { _, err := teams.Team(ctx, id); return err }
	}
	s.Budgets = b
	mgr.SetAdmission(b)
	s.Runaway = runaway.New(cfg.Policies(), mgr, mgr, evlog, log)
	s.Runaway.OnAction = s.Metrics.OnRunawayAction
	s.Runaway.TeamName = teamNamer(teams)
	s.History = history.New(mgr, cfg.MetricsInterval, cfg.MetricsRetention, log)
	s.historyHandler = history.NewHandler(s.History, mgr, log)
	s.routes = append(s.routes, s.historyHandler.Register, usage.NewHandler(s.Usage, mgr, log).Register, b.Register,
		analytics.NewHandler(analytics.New(s.Usage), log).Register, s.Metrics.Register)
	for _, p := range cfg.Policies() {
		log.Info("runaway policy", "policy", p.String())
	}
	return s, nil
}

// Sandboxes returns the manager wrapped so creates feed the latency
// histogram; give it to api.New instead of the bare manager.
func (s *Server) Sandboxes() metrics.Timed { return metrics.Timed{Manager: s.mgr, M: s.Metrics} }

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
