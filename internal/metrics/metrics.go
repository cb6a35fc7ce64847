// Package metrics exposes sbx's Prometheus metrics at /metrics. Names are
// prefixed sbx_. Gauges that describe current state (running sandboxes,
// webhook deliveries) are read at scrape time from the manager and the
// database, so they are right after a restart; counters of things that
// happen (budget refusals, runaway actions, create latency) are fed by the
// packages that do them through the On*/Observe* methods.
//
// /metrics needs the API key unless the server runs with --metrics-public.
// Its numbers cover every team (an operator's view).
package metrics

import (
	"context"
	"database/sql"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store"
)

// Live lists running and paused sandboxes (the sandbox manager).
type Live interface {
	Live() []store.Sandbox
}

// Metrics owns a Prometheus registry.
type Metrics struct {
	reg      *prometheus.Registry
	create   *prometheus.HistogramVec
	refusals *prometheus.CounterVec
	runaway  *prometheus.CounterVec
	budget   *prometheus.CounterVec
	log      *slog.Logger
}

// New registers sbx's metrics. live and db may be nil (then the gauges they
// feed are absent); db is the database holding webhook_deliveries.
func New(live Live, db *sql.DB, log *slog.Logger) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), log: log}
	m.create = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "sbx_sandbox_create_duration_seconds", Help: "Time to create a sandbox (API call to ready), by template.",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60},
	}, []string{"template"})
	m.refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbx_budget_refusals_total", Help: "Sandbox creates refused by a team budget, by limit.",
	}, []string{"limit"})
	m.budget = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbx_budget_actions_total", Help: "Sandboxes paused or killed because a team exceeded its spend budget.",
	}, []string{"action"})
	m.runaway = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbx_runaway_actions_total", Help: "Runaway sandboxes killed or paused, by action.",
	}, []string{"action"})
	m.reg.MustRegister(m.create, m.refusals, m.budget, m.runaway,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if live != nil {
		m.reg.MustRegister(&sandboxCollector{live: live})
	}
	if db != nil {
		m.reg.MustRegister(&webhookCollector{db: db, log: log})
	}
	return m
}

// ObserveCreate records one sandbox create's duration.
func (m *Metrics) ObserveCreate(template string, d time.Duration) {
	m.create.WithLabelValues(template).Observe(d.Seconds())
}

// OnBudgetRefusal counts a create refused by a budget limit.
func (m *Metrics) OnBudgetRefusal(limit string) { m.refusals.WithLabelValues(limit).Inc() }

// OnBudgetAction counts a sandbox paused or killed by a spend budget.
func (m *Metrics) OnBudgetAction(action string) { m.budget.WithLabelValues(action).Inc() }

// OnRunawayAction counts a runaway sandbox killed or paused.
func (m *Metrics) OnRunawayAction(action string) { m.runaway.WithLabelValues(action).Inc() }

// Handler serves the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(m.log.Handler(), slog.LevelWarn)})
}

// Register adds GET /metrics to an authenticated mux.
func (m *Metrics) Register(mux *http.ServeMux) { mux.Handle("GET /metrics", m.Handler()) }

var (
	runningDesc = prometheus.NewDesc("sbx_sandboxes_running", "Sandboxes running now, by template.",
		[]string{"template"}, nil)
	pausedDesc = prometheus.NewDesc("sbx_sandboxes_paused", "Sandboxes paused now, by template.",
		[]string{"template"}, nil)
	deliveriesDesc = prometheus.NewDesc("sbx_webhook_deliveries", "Webhook deliveries by state (pending, delivered, failed, ...).",
		[]string{"state"}, nil)
	attemptsDesc = prometheus.NewDesc("sbx_webhook_attempts_total", "Webhook delivery attempts by outcome.",
		[]string{"outcome"}, nil)
)

type sandboxCollector struct{ live Live }

func (c *sandboxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- runningDesc
	ch <- pausedDesc
}

func (c *sandboxCollector) Collect(ch chan<- prometheus.Metric) {
	running, paused := map[string]int{}, map[string]int{}
	for _, s := range c.live.Live() {
		if s.State == store.StatePaused {
			paused[s.TemplateID]++
		} else {
			running[s.TemplateID]++
		}
	}
	for tpl, n := range running {
		ch <- prometheus.MustNewConstMetric(runningDesc, prometheus.GaugeValue, float64(n), tpl)
	}
	for tpl, n := range paused {
		ch <- prometheus.MustNewConstMetric(pausedDesc, prometheus.GaugeValue, float64(n), tpl)
	}
}

type webhookCollector struct {
	db  *sql.DB
	log *slog.Logger
}

func (c *webhookCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- deliveriesDesc
	ch <- attemptsDesc
}

func (c *webhookCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.count(ctx, ch, deliveriesDesc, prometheus.GaugeValue, `SELECT state, COUNT(*) FROM webhook_deliveries GROUP BY state`)
	c.count(ctx, ch, attemptsDesc, prometheus.CounterValue, `SELECT status, COUNT(*) FROM webhook_attempts GROUP BY status`)
}

func (c *webhookCollector) count(ctx context.Context, ch chan<- prometheus.Metric, d *prometheus.Desc, vt prometheus.ValueType, q string) {
	rows, err := c.db.QueryContext(ctx, q)
	if err != nil {
		c.log.Debug("metrics: webhook tables not readable", "err", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var label string
		var n float64
		if rows.Scan(&label, &n) == nil {
			ch <- prometheus.MustNewConstMetric(d, vt, n, label)
		}
	}
}

// Timed wraps the sandbox manager so every Create feeds the create latency
// histogram; everything else is the manager's own method.
type Timed struct {
	*sandbox.Manager
	M *Metrics
}

// Create times the manager's Create.
func (t Timed) Create(ctx context.Context, req sandbox.CreateRequest) (store.Sandbox, error) {
	start := time.Now()
	sb, err := t.Manager.Create(ctx, req)
	if err == nil {
		t.M.ObserveCreate(sb.TemplateID, time.Since(start))
	}
	return sb, err
}
