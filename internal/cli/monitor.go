package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/internal/monitor"
	"github.com/sbxdev/sbx/internal/usage"
)

func newMonitorCmd() *cobra.Command {
	var cfg monitor.StandaloneConfig
	var listen, logLevel string
	var logJSON bool
	cmd := &cobra.Command{
		Use:   "monitor --listen :8080 --secret S [--e2b-api-key K] [--db FILE]",
		Short: "Monitor sandboxes on E2B's cloud from its webhooks: dashboard, cost, budget alerts, runaway kills",
		Long: `Run a webhook receiver for a team on E2B's cloud. Point an E2B webhook at
http://<this host>/webhook with the same signature secret: every delivery's
e2b-signature is checked (a forged one gets 401 and is not stored) and the event is
kept in a SQLite file. On top of it, the same tools as 'sbx serve':

  /dashboard                 live sandboxes, events, cost and concurrency charts
  GET /usage, /analytics/*   cost per template/day/refinement, summaries, time series
  GET/PUT /teams/me/budget   spend budgets: team.budget.warning/exceeded alerts
  --runaway POLICY           e.g. 'max-lifetime=10m action=kill'

Data calls need the dashboard key as X-API-Key (printed at start; kept in FILE.key).
With --e2b-api-key, runaway sandboxes (and spend breaches with action kill/pause) are
killed or paused through E2B's API; without it, sbx monitor only alerts. Sizes are
assumed to be --default-vcpu/--default-memory-mb until E2B reports them at pause/kill.`,
		Example: `  sbx monitor --listen :8080 --secret "$WEBHOOK_SECRET"
  sbx monitor --listen :8080 --secret "$WEBHOOK_SECRET" --e2b-api-key "$E2B_API_KEY" \
      --runaway 'max-lifetime=10m action=kill' --db /var/lib/sbx-monitor.db`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel, logJSON)
			if err != nil {
				return err
			}
			if cfg.Secret == "" {
				return errors.New("--secret is required: the signature secret of the E2B webhook that will send here")
			}
			ctx := cmd.Context()
			mon, err := monitor.NewStandalone(ctx, cfg, log)
			if err != nil {
				return err
			}
			defer mon.Close()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("--listen %s: %w", listen, err)
			}
			srv := &http.Server{Handler: mon, ReadHeaderTimeout: 10 * time.Second}
			runCtx, stop := context.WithCancel(ctx)
			defer stop()
			go mon.Run(runCtx)
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			fmt.Fprintf(cmd.OutOrStdout(), "sbx monitor listening on %s\n  webhook URL: http://%s/webhook\n  dashboard:   http://%s/dashboard\n  dashboard key: %s\n",
				ln.Addr(), ln.Addr(), ln.Addr(), mon.DashKey)
			if cfg.E2BAPIKey == "" {
				fmt.Fprintln(cmd.OutOrStdout(), "  no --e2b-api-key: alerts only, nothing is killed")
			}
			select {
			case <-ctx.Done():
			case err := <-errc:
				return fmt.Errorf("serve: %w", err)
			}
			shCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(shCtx)
			return nil
		},
	}
	f := cmd.Flags()
	d := usage.DefaultRates()
	f.StringVar(&listen, "listen", ":8080", "address to listen on")
	f.StringVar(&cfg.Secret, "secret", "", "the E2B webhook's signature secret (required)")
	f.StringVar(&cfg.E2BAPIKey, "e2b-api-key", "", "E2B API key used to kill or pause runaway sandboxes (none: alerts only)")
	f.StringVar(&cfg.E2BAPIURL, "e2b-api-url", monitor.DefaultE2BAPIURL, "E2B API URL")
	f.StringVar(&cfg.DBPath, "db", "sbx-monitor.db", "SQLite file for the received events")
	f.StringVar(&cfg.DashboardKey, "dashboard-key", "", "key for the dashboard and data API (default: generated once, kept in <db>.key)")
	f.StringVar(&cfg.TeamID, "team-id", "", "E2B team to show (default: the team of the latest event)")
	f.StringArrayVar(&cfg.Runaway, "runaway", nil, "runaway policy, repeatable, e.g. 'max-lifetime=10m action=kill' (keys: max-lifetime, team, template, action)")
	f.DurationVar(&cfg.Interval, "check-interval", monitor.DefaultRunawayInterval, "how often runaway policies and budgets are checked")
	f.Float64Var(&cfg.Rates.VCPUSecond, "price-vcpu-second", d.VCPUSecond, "USD per vCPU-second")
	f.Float64Var(&cfg.Rates.GiBSecond, "price-gib-second", d.GiBSecond, "USD per GiB-second")
	f.IntVar(&cfg.DefaultVCPU, "default-vcpu", 2, "vCPUs assumed for a sandbox until E2B reports its size")
	f.IntVar(&cfg.DefaultMemoryMB, "default-memory-mb", 512, "memory assumed for a sandbox until E2B reports its size")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.BoolVar(&logJSON, "log-json", false, "log as JSON lines")
	return cmd
}
