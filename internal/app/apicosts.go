package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/sbxdev/sbx/internal/analytics"
	"github.com/sbxdev/sbx/internal/api"
	"github.com/sbxdev/sbx/internal/budget"
	"github.com/sbxdev/sbx/internal/cluster"
	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/history"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
	"github.com/sbxdev/sbx/internal/usage"
)

// apiReplicaCosts is what an api replica serves of usage, cost, analytics
// and budgets (docs/cluster.md). Their data is the shared database's:
// lifecycle events (every node records its sandboxes' there) and the
// sandbox rows for sizes and concurrency, so the figures cover every
// node. What is kept on nodes only is not served here: measured cgroup
// figures (GET /sandboxes/{id}/usage has no "measured" through an api
// replica) and the metrics history of several sandboxes
// (history.OnAPIReplica answers with what to do). Budget enforcement
// (warnings, refusals, pause or kill on a breach) stays with the nodes'
// monitors; here budgets are read and set.
func apiReplicaCosts(ctx context.Context, cfg Config, st *sqlstore.Store, evlog *events.Log, log *slog.Logger) ([]api.Registrar, error) {
	live := cluster.NewLiveRows(st, time.Second, log)
	rates := cfg.Monitoring.Rates
	if rates == (usage.Rates{}) {
		rates = usage.DefaultRates()
	}
	svc := usage.NewService(evlog, rates, live.Live)
	budgets, err := budget.NewWithRepository(ctx, st, evlog, svc, live, log)
	if err != nil {
		return nil, err
	}
	budgets.TeamExists = func(ctx context.Context, id string) error { _, err := st.Team(ctx, id); return err }
	return []api.Registrar{usage.NewHandler(svc, nil, log), analytics.NewHandler(analytics.New(svc), log), budgets,
		history.OnAPIReplica{}}, nil
}
