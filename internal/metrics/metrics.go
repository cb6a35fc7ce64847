// Package metrics exposes sbx's Prometheus metrics at /metrics. Names are
// prefixed sbx_. Gauges that describe current state (running sandboxes,
// webhook deliveries) are read at scrape time from the manager and the
// database, so they are right after a restart; counters of things that
// happen (budget refusals, runaway actions, create latency) are fed by the
// packages that do them through the On*/Observe* methods.
//
// Every series about a team's sandboxes, budgets, runaways or webhooks
// carries a "team" label (the team ID), and /metrics answers each caller
// with its own view (scope.go): the admin key gets every series, a team's
// key only the series of its team, and an anonymous scrape (allowed with
// --metrics-public) only the series without a team label: the process
// and the cluster totals, which name no team and no template.
package metrics

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

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
	ops      *ops
	webhooks *webhookCollector // nil without a database
	log      *slog.Logger
}

// New registers sbx's metrics. live and webhooks may be nil (then the
// gauges they feed are absent).
func New(live Live, webhooks WebhookCounts, log *slog.Logger) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), ops: newOps(), log: log}
	m.create = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "sbx_sandbox_create_duration_seconds", Help: "Time to create a sandbox (API call to ready), by team and template name.",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60},
	}, []string{TeamLabel, "template"})
	m.refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbx_budget_refusals_total", Help: "Sandbox creates refused by a team budget, by team and limit.",
	}, []string{TeamLabel, "limit"})
	m.budget = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbx_budget_actions_total", Help: "Sandboxes paused or killed because a team exceeded its spend budget.",
	}, []string{TeamLabel, "action"})
	m.runaway = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbx_runaway_actions_total", Help: "Runaway sandboxes killed or paused, by team and action.",
	}, []string{TeamLabel, "action"})
	m.reg.MustRegister(m.create, m.refusals, m.budget, m.runaway,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.reg.MustRegister(m.ops.collectors()...)
	if live != nil {
		m.reg.MustRegister(&sandboxCollector{live: live})
	}
	if webhooks != nil {
		m.webhooks = &webhookCollector{db: webhooks, log: log, ttl: webhookCountsTTL}
		m.reg.MustRegister(m.webhooks)
	}
	return m
}

// ObserveCreate records one sandbox create's duration; template is the
// template's name.
func (m *Metrics) ObserveCreate(teamID, template string, d time.Duration) {
	m.create.WithLabelValues(teamID, m.ops.templates.label(template)).Observe(d.Seconds())
}

// OnBudgetRefusal counts a create refused by a budget limit.
func (m *Metrics) OnBudgetRefusal(teamID, limit string) {
	m.refusals.WithLabelValues(teamID, limit).Inc()
}

// OnBudgetAction counts a sandbox paused or killed by a spend budget.
func (m *Metrics) OnBudgetAction(teamID, action string) {
	m.budget.WithLabelValues(teamID, action).Inc()
}

// OnRunawayAction counts a runaway sandbox killed or paused.
func (m *Metrics) OnRunawayAction(teamID, action string) {
	m.runaway.WithLabelValues(teamID, action).Inc()
}

// Handler serves the Prometheus text format, scoped to the caller.
func (m *Metrics) Handler() http.Handler {
	opts := promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(m.log.Handler(), slog.LevelWarn)}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		promhttp.HandlerFor(scoped{m.reg, scopeOf(r.Context())}, opts).ServeHTTP(w, r)
	})
}

// Register adds GET /metrics to the API's mux, behind the API key unless
// AnonymousPatterns lets it through (--metrics-public).
func (m *Metrics) Register(mux *http.ServeMux) { mux.Handle("GET /metrics", m.Handler()) }

// MustRegister adds series of other packages (an api replica's cluster
// series) to the registry.
func (m *Metrics) MustRegister(cs ...prometheus.Collector) { m.reg.MustRegister(cs...) }

// Endpoint is GET /metrics as an API registrar (api.New's extra) where no
// monitoring server serves it (an api replica): with the admin key every
// series, a team key its own, and anonymously with Public
// (--metrics-public) the series that name no team, as on one box.
type Endpoint struct {
	M      *Metrics
	Public bool
}

// Register adds GET /metrics.
func (e Endpoint) Register(mux *http.ServeMux) { e.M.Register(mux) }

// AdminPatterns: the admin sees every team's series.
func (e Endpoint) AdminPatterns() []string { return []string{"GET /metrics"} }

// AnonymousPatterns: /metrics without a key with --metrics-public.
func (e Endpoint) AnonymousPatterns() []string {
	if e.Public {
		return []string{"GET /metrics"}
	}
	return nil
}

var (
	runningDesc = prometheus.NewDesc("sbx_sandboxes_running", "Sandboxes running now, by team and template.",
		[]string{TeamLabel, "template"}, nil)
	pausedDesc = prometheus.NewDesc("sbx_sandboxes_paused", "Sandboxes paused now, by team and template.",
		[]string{TeamLabel, "template"}, nil)
	clusterDesc = prometheus.NewDesc("sbx_cluster_sandboxes", "Sandboxes of all teams on this server now, by state (running, paused).",
		[]string{"state"}, nil)
	clusterQueueDesc = prometheus.NewDesc("sbx_cluster_webhook_queue_depth", "Webhook deliveries of all teams queued now (pending, waiting for a retry or in flight).",
		nil, nil)
	queueDesc = prometheus.NewDesc("sbx_webhook_queue_depth", "Webhook deliveries queued now (pending, waiting for a retry or in flight), by team; 0 for every team with a webhook.",
		[]string{TeamLabel}, nil)
	deliveriesDesc = prometheus.NewDesc("sbx_webhook_deliveries", "Webhook deliveries kept by team and state (pending, delivered, failed, ...; counted in the database at most every 30 s).",
		[]string{TeamLabel, "state"}, nil)
	attemptsDesc = prometheus.NewDesc("sbx_webhook_attempts_total", "Webhook delivery attempts by team and outcome (counted in the database at most every 30 s).",
		[]string{TeamLabel, "outcome"}, nil)
)

type sandboxCollector struct{ live Live }

func (c *sandboxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- runningDesc
	ch <- pausedDesc
	ch <- clusterDesc
}

func (c *sandboxCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ team, template string }
	running, paused := map[key]int{}, map[key]int{}
	var nRunning, nPaused int
	for _, s := range c.live.Live() {
		k := key{s.TeamID, s.TemplateID}
		if s.State == store.StatePaused {
			paused[k]++
			nPaused++
		} else {
			running[k]++
			nRunning++
		}
	}
	for k, n := range running {
		ch <- prometheus.MustNewConstMetric(runningDesc, prometheus.GaugeValue, float64(n), k.team, k.template)
	}
	for k, n := range paused {
		ch <- prometheus.MustNewConstMetric(pausedDesc, prometheus.GaugeValue, float64(n), k.team, k.template)
	}
	ch <- prometheus.MustNewConstMetric(clusterDesc, prometheus.GaugeValue, float64(nRunning), "running")
	ch <- prometheus.MustNewConstMetric(clusterDesc, prometheus.GaugeValue, float64(nPaused), "paused")
}

// CreateDone feeds the create latency histogram, or the failures counter
// by the category of err (sandbox.Observer: the manager times its Create).
func (m *Metrics) CreateDone(sb store.Sandbox, d time.Duration, err error) {
	if err != nil {
		m.createFailed(err)
		return
	}
	m.ObserveCreate(sb.TeamID, sb.Alias, d)
}
