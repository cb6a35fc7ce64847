// Package monitor assembles sbx's monitoring features — usage and cost,
// budgets, runaway detection, analytics, Prometheus metrics and the live
// dashboard — in two settings: inside `sbx serve` (ForServer), where sbx
// owns the sandboxes and enforces limits, and as `sbx monitor` (Standalone),
// a webhook consumer for a team on E2B's cloud that stores the signed
// events it receives in its own SQLite and kills runaways through E2B's API.
package monitor

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/sbxdev/sbx/internal/history"
	"github.com/sbxdev/sbx/internal/runaway"
	"github.com/sbxdev/sbx/internal/usage"
)

// Config is the monitoring part of the server configuration.
type Config struct {
	Rates           usage.Rates
	Runaway         []string // policy lines, parsed by Validate
	RunawayInterval time.Duration
	BudgetInterval  time.Duration
	MetricsPublic   bool
	// MetricsInterval and MetricsRetention: how often sandbox metrics are
	// sampled into the history GET /sandboxes/{id}/metrics reads, and how
	// long samples are kept.
	MetricsInterval  time.Duration
	MetricsRetention time.Duration

	policies []runaway.Policy
}

// Defaults.
const (
	DefaultRunawayInterval = 10 * time.Second
	DefaultBudgetInterval  = 30 * time.Second
)

// AddFlags registers the monitoring flags of `sbx serve`.
func (c *Config) AddFlags(f *pflag.FlagSet) {
	d := usage.DefaultRates()
	f.Float64Var(&c.Rates.VCPUSecond, "price-vcpu-second", d.VCPUSecond, "USD per allocated vCPU-second, for cost tracking and budgets")
	f.Float64Var(&c.Rates.GiBSecond, "price-gib-second", d.GiBSecond, "USD per allocated GiB-second of memory")
	f.StringArrayVar(&c.Runaway, "runaway", nil, "runaway policy, repeatable, e.g. 'max-lifetime=10m action=kill' or 'template=base cpu=95% cpu-for=5m action=pause' (keys: max-lifetime, cpu, cpu-for, idle, idle-cpu, team, template, action)")
	f.DurationVar(&c.RunawayInterval, "runaway-interval", DefaultRunawayInterval, "how often runaway policies are checked")
	f.DurationVar(&c.BudgetInterval, "budget-interval", DefaultBudgetInterval, "how often spend budgets are checked against running sandboxes")
	f.DurationVar(&c.MetricsInterval, "metrics-interval", history.DefaultInterval, "how often each running sandbox's CPU, memory and disk use is sampled into its metrics history (GET /sandboxes/{id}/metrics?start=&end=) and team activity counted")
	f.DurationVar(&c.MetricsRetention, "metrics-retention", history.DefaultRetention, "how long sandbox metric samples are kept in memory (team activity: 24h)")
	f.BoolVar(&c.MetricsPublic, "metrics-public", false, "serve Prometheus /metrics without an API key too; an anonymous scrape sees only the series that name no team (process, cluster totals); the admin key sees all, a team key its own")
}

// Validate parses the runaway policies and fills defaults.
func (c *Config) Validate() error {
	if err := c.Rates.Validate(); err != nil {
		return fmt.Errorf("--price-*: %w", err)
	}
	if c.Rates == (usage.Rates{}) {
		c.Rates = usage.DefaultRates()
	}
	if c.RunawayInterval <= 0 {
		c.RunawayInterval = DefaultRunawayInterval
	}
	if c.MetricsInterval <= 0 {
		c.MetricsInterval = history.DefaultInterval
	}
	if c.MetricsRetention <= 0 {
		c.MetricsRetention = history.DefaultRetention
	}
	if c.MetricsRetention < c.MetricsInterval {
		return fmt.Errorf("--metrics-retention (%s) must be at least --metrics-interval (%s)", c.MetricsRetention, c.MetricsInterval)
	}
	if c.BudgetInterval <= 0 {
		c.BudgetInterval = DefaultBudgetInterval
	}
	c.policies = c.policies[:0]
	for _, line := range c.Runaway {
		p, err := runaway.ParsePolicy(line)
		if err != nil {
			return fmt.Errorf("--runaway: %w", err)
		}
		c.policies = append(c.policies, p)
	}
	return nil
}

// Policies returns the parsed runaway policies (after Validate).
func (c *Config) Policies() []runaway.Policy { return c.policies }
