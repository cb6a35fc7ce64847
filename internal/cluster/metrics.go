package cluster

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sbxdev/sbx/internal/placement"
)

// Counter counts the cluster's sandboxes and queued builds in the shared
// database (sqlstore.Store.ClusterCounts).
type Counter interface {
	ClusterCounts(ctx context.Context) (running, paused, queuedBuilds int, err error)
}

// countsTTL is how long the database counts are reused: a scrape every
// few seconds from several Prometheus servers costs one pair of queries.
const countsTTL = 2 * time.Second

// Metrics are an api replica's Prometheus series: its placement decisions
// and forward errors (counted as they happen), and at scrape time the
// nodes by status (from the last registry read, no query) and the
// cluster's sandboxes and queued builds (from the database, at most every
// countsTTL). None names a team: an anonymous scrape (--metrics-public)
// sees them all.
type Metrics struct {
	decisions *prometheus.CounterVec
	latency   prometheus.Histogram
	forwards  *prometheus.CounterVec
	nodes     *Nodes
	counter   Counter
	log       *slog.Logger
	now       func() time.Time

	mu                      sync.Mutex
	countedAt               time.Time
	running, paused, queued int
	countErr                error
}

var (
	nodesDesc = prometheus.NewDesc("sbx_cluster_nodes", "Nodes in the cluster's registry by status (ready, draining, connecting, unhealthy, lost), as of this api replica's last read (every second).",
		[]string{"status"}, nil)
	sandboxesDesc = prometheus.NewDesc("sbx_cluster_sandboxes", "Sandboxes of all teams on all nodes now, by state (running, paused), from the database (at most 2 s old).",
		[]string{"state"}, nil)
	buildsDesc = prometheus.NewDesc("sbx_build_jobs_queued", "Template builds queued for a node to claim, from the database (at most 2 s old).",
		nil, nil)
)

// NewMetrics returns the series of an api replica reading nodes and
// counter.
func NewMetrics(nodes *Nodes, counter Counter, log *slog.Logger) *Metrics {
	m := &Metrics{nodes: nodes, counter: counter, log: log, now: time.Now}
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbx_placement_decisions_total",
		Help: "Sandbox placements by this api replica, by result: placed (a node created it), no_fit (no node could take it), failed (the create failed for another reason).",
	}, []string{"result"})
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "sbx_placement_decision_seconds",
		Help:    "Time this api replica spent choosing nodes for one create (all attempts, without the creates on the nodes).",
		Buckets: []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25},
	})
	m.forwards = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sbx_cluster_forward_errors_total",
		Help: "Calls and sandbox traffic this api replica sent to a node that failed: the node could not be reached or answered, refused the signature, or answered 5xx.",
	}, []string{"node"})
	for _, r := range []string{"placed", "no_fit", "failed"} {
		m.decisions.WithLabelValues(r)
	}
	return m
}

// Collectors are the series to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.decisions, m.latency, m.forwards, m}
}

// placed records one create's placement: how long choosing took and how
// it ended.
func (m *Metrics) placed(err error, choosing time.Duration) {
	if m == nil {
		return
	}
	m.latency.Observe(choosing.Seconds())
	var nf *placement.NoFitError
	switch {
	case err == nil:
		m.decisions.WithLabelValues("placed").Inc()
	case errors.As(err, &nf):
		m.decisions.WithLabelValues("no_fit").Inc()
	default:
		m.decisions.WithLabelValues("failed").Inc()
	}
}

// forwardError counts a failed call or request to node.
func (m *Metrics) forwardError(node string) {
	if m == nil || node == "" {
		return
	}
	m.forwards.WithLabelValues(node).Inc()
}

// Describe is prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- nodesDesc
	ch <- sandboxesDesc
	ch <- buildsDesc
}

// Collect is prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{StatusReady: 0, StatusDraining: 0, StatusConnecting: 0, StatusUnhealthy: 0, StatusLost: 0}
	now := m.nodes.now()
	for _, r := range *m.nodes.rows.Load() {
		counts[m.nodes.status(r, now)]++
	}
	for st, n := range counts {
		ch <- prometheus.MustNewConstMetric(nodesDesc, prometheus.GaugeValue, float64(n), st)
	}
	running, paused, queued, err := m.counts()
	if err != nil {
		return // the series go missing rather than read 0: the log says why
	}
	ch <- prometheus.MustNewConstMetric(sandboxesDesc, prometheus.GaugeValue, float64(running), "running")
	ch <- prometheus.MustNewConstMetric(sandboxesDesc, prometheus.GaugeValue, float64(paused), "paused")
	ch <- prometheus.MustNewConstMetric(buildsDesc, prometheus.GaugeValue, float64(queued))
}

func (m *Metrics) counts() (running, paused, queued int, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if now := m.now(); m.countedAt.IsZero() || now.Sub(m.countedAt) >= countsTTL {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		m.running, m.paused, m.queued, m.countErr = m.counter.ClusterCounts(ctx)
		m.countedAt = now
		if m.countErr != nil {
			m.log.Warn("metrics: count the cluster's sandboxes and builds", "err", m.countErr)
		}
	}
	return m.running, m.paused, m.queued, m.countErr
}
