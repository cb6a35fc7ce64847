package cli

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sbxdev/sbx/internal/budget"
)

func newBudgetCmd() *cobra.Command {
	var opts accountOptions
	var team string
	cmd := &cobra.Command{
		Use:   "budget",
		Short: "Show a team's budget, or set it with the admin key (concurrency, daily creates, daily and monthly spend)",
		Long: `A budget limits a team. A team reads its own ('sbx budget get' with its key); only the
admin key sets budgets ('sudo sbx budget set --team TEAM ...'), as a team must not lift
its own limits. A create over a limit is refused with HTTP 429
(the E2B SDKs raise RateLimitError) and a team.budget.exceeded event, which webhooks
receive; team.budget.warning fires once per period when usage reaches --warn-at percent.
When spend passes a limit, --action pause or kill stops the team's running sandboxes
(their paused/killed events carry the reason "budget"). 0 means no limit.

Spend is allocated vCPU-seconds and GiB-seconds of running time (paused time is not
billed) at the server's --price-vcpu-second and --price-gib-second; days and months
are UTC.`,
	}
	opts.register(cmd)
	cmd.PersistentFlags().StringVar(&team, "team", "", "the team (ID or name), with the admin key; get without it shows your own team's")
	cmd.AddCommand(newBudgetGetCmd(&opts, &team), newBudgetSetCmd(&opts, &team))
	return cmd
}

// budgetPath is the budget route of --team (admin key) or of the caller's
// own team.
func budgetPath(ctx context.Context, opts *accountOptions, team string) (*apiClient, string, error) {
	if team == "" {
		c, err := opts.rawTeam()
		return c, "/teams/me/budget", err
	}
	sc, err := opts.admin("")
	if err != nil {
		return nil, "", err
	}
	t, err := findTeam(ctx, sc, team)
	if err != nil {
		return nil, "", err
	}
	c, err := opts.rawAdmin()
	return c, "/teams/" + url.PathEscape(t.TeamID) + "/budget", err
}

func newBudgetGetCmd(opts *accountOptions, team *string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "get",
		Short:   "Show the team's limits and what it uses now",
		Example: "  sbx budget get\n  sbx budget get --json\n  sudo sbx budget get --team research",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, path, err := budgetPath(cmd.Context(), opts, *team)
			if err != nil {
				return err
			}
			var b budget.Body
			if err := c.do(cmd.Context(), "GET", path, nil, &b); err != nil {
				return err
			}
			return printBudget(cmd.OutOrStdout(), b, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the budget as JSON")
	return cmd
}

func newBudgetSetCmd(opts *accountOptions, team *string) *cobra.Command {
	var u budget.Update
	var concurrent, creates int
	var daily, monthly, warn float64
	var action string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "set --team TEAM [--max-concurrent N] [--max-daily-creates N] [--max-daily-spend USD] [--max-monthly-spend USD] [--warn-at PERCENT] [--action none|pause|kill]",
		Short: "Change a team's limits with the admin key (flags left out keep their value; 0 = no limit)",
		Example: `  sudo sbx budget set --team research --max-concurrent 10 --max-daily-spend 5 --warn-at 80
  sudo sbx budget set --team research --max-monthly-spend 100 --action pause
  sudo sbx budget set --team research --max-concurrent 0   # remove the concurrency limit`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			changed := false
			for _, name := range []string{"max-concurrent", "max-daily-creates", "max-daily-spend", "max-monthly-spend", "warn-at", "action"} {
				changed = changed || f.Changed(name)
			}
			if !changed {
				return fmt.Errorf("nothing to set: pass at least one of --max-concurrent, --max-daily-creates, --max-daily-spend, --max-monthly-spend, --warn-at, --action")
			}
			if f.Changed("max-concurrent") {
				u.MaxConcurrent = &concurrent
			}
			if f.Changed("max-daily-creates") {
				u.MaxDailyCreates = &creates
			}
			if f.Changed("max-daily-spend") {
				u.MaxDailySpend = &daily
			}
			if f.Changed("max-monthly-spend") {
				u.MaxMonthlySpend = &monthly
			}
			if f.Changed("warn-at") {
				u.WarnAtPercent = &warn
			}
			if f.Changed("action") {
				u.Action = &action
			}
			// Check locally too, for an error before any request.
			if err := u.Apply(budget.Limits{}).Validate(); err != nil {
				return err
			}
			if *team == "" {
				return fmt.Errorf("budgets are set by the server's admin: pass --team TEAM (and the admin key: run as root on the server's host, or --admin-key)")
			}
			c, path, err := budgetPath(cmd.Context(), opts, *team)
			if err != nil {
				return err
			}
			var b budget.Body
			if err := c.do(cmd.Context(), "PUT", path, u, &b); err != nil {
				return err
			}
			return printBudget(cmd.OutOrStdout(), b, asJSON)
		},
	}
	f := cmd.Flags()
	f.IntVar(&concurrent, "max-concurrent", 0, "max sandboxes running or paused at once (0 = no limit)")
	f.IntVar(&creates, "max-daily-creates", 0, "max sandboxes created per UTC day (0 = no limit)")
	f.Float64Var(&daily, "max-daily-spend", 0, "max spend per UTC day in USD (0 = no limit)")
	f.Float64Var(&monthly, "max-monthly-spend", 0, "max spend per UTC month in USD (0 = no limit)")
	f.Float64Var(&warn, "warn-at", 0, "send team.budget.warning at this percent of a limit (0 = never)")
	f.StringVar(&action, "action", "none", "on a spend breach: none, pause or kill the team's sandboxes")
	f.BoolVar(&asJSON, "json", false, "print the budget as JSON")
	return cmd
}

func printBudget(w io.Writer, b budget.Body, asJSON bool) error {
	if asJSON {
		return writeJSON(w, b)
	}
	limit := func(v float64, money bool) string {
		switch {
		case v == 0:
			return "no limit"
		case money:
			return fmt.Sprintf("$%.4f", v)
		}
		return fmt.Sprintf("%g", v)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "team\t%s\n", b.TeamID)
	fmt.Fprintln(tw, "LIMIT\tMAX\tNOW")
	fmt.Fprintf(tw, "concurrent sandboxes\t%s\t%d\n", limit(float64(b.MaxConcurrent), false), b.Status.Concurrent)
	fmt.Fprintf(tw, "creates today\t%s\t%d\n", limit(float64(b.MaxDailyCreates), false), b.Status.DailyCreates)
	fmt.Fprintf(tw, "spend today\t%s\t$%.4f\n", limit(b.MaxDailySpend, true), b.Status.DailySpend)
	fmt.Fprintf(tw, "spend this month\t%s\t$%.4f\n", limit(b.MaxMonthlySpend, true), b.Status.MonthlySpend)
	warn := "never"
	if b.WarnAtPercent > 0 {
		warn = fmt.Sprintf("%g%%", b.WarnAtPercent)
	}
	fmt.Fprintf(tw, "warn at\t%s\t\n", warn)
	fmt.Fprintf(tw, "on spend breach\t%s\t\n", b.Action)
	return tw.Flush()
}
