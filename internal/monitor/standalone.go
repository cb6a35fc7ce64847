package monitor

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/analytics"
	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/budget"
	"github.com/sbxdev/sbx/internal/dashboard"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/runaway"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
	"github.com/sbxdev/sbx/internal/usage"
)

// DefaultE2BAPIURL is E2B's control-plane API.
const DefaultE2BAPIURL = "https://api.e2b.dev"

// StandaloneConfig configures `sbx monitor`.
type StandaloneConfig struct {
	Secret       string // the webhook's signature secret (required)
	DBPath       string // SQLite file (created)
	DashboardKey string // the key the dashboard sends as X-API-Key ("" = generated, kept in DBPath+".key")
	TeamID       string // which E2B team the dashboard shows ("" = the team of the latest event)
	E2BAPIKey    string // "" = alerts only, no kills
	E2BAPIURL    string
	Rates        usage.Rates
	Runaway      []string
	Interval     time.Duration // runaway and budget checks
	// Sandbox sizes assumed until a paused/killed event reports them
	// (E2B's created events carry none). E2B's default is 2 vCPU, 512 MiB.
	DefaultVCPU     int
	DefaultMemoryMB int
}

// Standalone is `sbx monitor`: E2B webhook consumer, dashboard, cost,
// budget alerts and runaway detection.
type Standalone struct {
	cfg     StandaloneConfig
	store   *sqlstore.Store
	evlog   *events.Log
	logger  *slog.Logger
	Usage   *usage.Service
	Budgets *budget.Budgets
	Runaway *runaway.Detector
	Ingest  *Ingest
	view    *e2bSandboxes
	mux     *http.ServeMux // authenticated
	public  *http.ServeMux
	DashKey string
}

// NewStandalone opens the database and assembles the consumer.
func NewStandalone(ctx context.Context, cfg StandaloneConfig, logger *slog.Logger) (*Standalone, error) {
	if cfg.Secret == "" {
		return nil, errors.New("--secret is required: the signature secret of the E2B webhook that sends here")
	}
	if cfg.DBPath == "" {
		cfg.DBPath = "sbx-monitor.db"
	}
	if cfg.E2BAPIURL == "" {
		cfg.E2BAPIURL = DefaultE2BAPIURL
	}
	if cfg.Rates == (usage.Rates{}) {
		cfg.Rates = usage.DefaultRates()
	}
	if err := cfg.Rates.Validate(); err != nil {
		return nil, err
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultRunawayInterval
	}
	var policies []runaway.Policy
	for _, line := range cfg.Runaway {
		p, err := runaway.ParsePolicy(line)
		if err != nil {
			return nil, fmt.Errorf("--runaway: %w", err)
		}
		if p.CPUFor > 0 || p.IdleFor > 0 {
			return nil, fmt.Errorf("--runaway %q: sbx monitor sees only webhook events, not CPU use; use max-lifetime", line)
		}
		policies = append(policies, p)
	}
	key, err := dashboardKey(cfg)
	if err != nil {
		return nil, err
	}
	// sqldb creates the file 0600: it holds every team's events and
	// webhook payloads.
	db, err := sqldb.Open(ctx, cfg.DBPath, sqldb.Options{Log: logger})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", cfg.DBPath, err)
	}
	st := sqlstore.New(db, nil)
	s := &Standalone{cfg: cfg, store: st, logger: logger, DashKey: key, mux: http.NewServeMux(), public: http.NewServeMux()}
	s.evlog = events.New(st, logger)
	s.view = &e2bSandboxes{evlog: s.evlog, apiURL: strings.TrimRight(cfg.E2BAPIURL, "/"), apiKey: cfg.E2BAPIKey,
		http: &http.Client{Timeout: 30 * time.Second}, log: logger}
	s.Usage = usage.NewService(s.evlog, cfg.Rates, nil)
	s.Usage.DefaultVCPU, s.Usage.DefaultMemoryMB = cfg.DefaultVCPU, cfg.DefaultMemoryMB
	s.view.usage = s.Usage
	if s.Budgets, err = budget.NewWithRepository(ctx, st, s.evlog, s.Usage, s.view, logger); err != nil {
		st.Close()
		return nil, err
	}
	s.Runaway = runaway.New(policies, s.view, nil, s.evlog, logger)
	s.Ingest = NewIngest(cfg.Secret, s.evlog, logger)

	s.public.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	s.public.Handle("POST /webhook", s.Ingest)
	s.public.Handle("POST /", s.Ingest) // a webhook URL without a path
	dashboard.Register(publicMux{s.public}, s, logger)
	events.NewHandler(s.evlog, logger).Register(s.mux)
	usage.NewHandler(s.Usage, nil, logger).Register(s.mux)
	analytics.NewHandler(analytics.New(s.Usage), logger).Register(s.mux)
	s.Budgets.Register(s.mux)
	s.view.Register(s.mux)
	return s, nil
}

type publicMux struct{ *http.ServeMux }

func (p publicMux) AddPublic(pattern string, h http.Handler) { p.Handle(pattern, h) }

// dashboardKey returns the configured key or one kept next to the database.
func dashboardKey(cfg StandaloneConfig) (string, error) {
	if cfg.DashboardKey != "" {
		return cfg.DashboardKey, nil
	}
	path := cfg.DBPath + ".key"
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	key := "sbxmon_" + hex.EncodeToString(b)
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write the dashboard key to %s: %w", path, err)
	}
	return key, nil
}

// Close closes the database.
func (s *Standalone) Close() error { return s.store.Close() }

// ServeHTTP serves the public routes, then the key-protected ones.
func (s *Standalone) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h, pattern := s.public.Handler(r); pattern != "" {
		h.ServeHTTP(w, r)
		return
	}
	key := r.Header.Get("X-API-Key")
	if key == "" || subtle.ConstantTimeCompare([]byte(key), []byte(s.DashKey)) != 1 {
		errdefs.WriteHTTP(w, nil, errdefs.Unauthenticated("missing or wrong key: send the dashboard key (printed at start, kept in %s.key) as X-API-Key", s.cfg.DBPath))
		return
	}
	team := s.cfg.TeamID
	if team == "" {
		team = s.latestTeam(r.Context())
	}
	// The dashboard key's holder runs this monitor: the admin of its one
	// team (it sets the budgets its kills enforce).
	r = r.WithContext(auth.WithTeam(r.Context(), auth.Team{ID: team, Name: team, Admin: true}))
	if _, pattern := s.mux.Handler(r); pattern == "" {
		errdefs.WriteHTTP(w, nil, errdefs.NotFound("no such endpoint on sbx monitor: %s %s", r.Method, r.URL.Path))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// latestTeam is the team of the newest stored event ("-" before any).
func (s *Standalone) latestTeam(ctx context.Context) string {
	team, err := s.evlog.LatestTeam(ctx)
	if err != nil {
		s.logger.Warn("find the team of the latest event", "err", err)
	}
	if team == "" {
		return "-"
	}
	return team
}

// Run runs the runaway and budget checks until ctx ends.
func (s *Standalone) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.Runaway.Run(ctx, s.cfg.Interval) }()
	go func() { defer wg.Done(); s.Budgets.Run(ctx, s.cfg.Interval) }()
	wg.Wait()
}
