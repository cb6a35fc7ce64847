package metrics

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sbxdev/sbx/internal/store"
)

// WebhookQueue is the webhook engine's in-memory queue (webhook.Engine).
type WebhookQueue interface {
	QueueDepth() map[string]int
}

// SetWebhookQueue makes scrapes report the webhook queue depth.
func (m *Metrics) SetWebhookQueue(q WebhookQueue) {
	if m.webhooks != nil {
		m.webhooks.mu.Lock()
		m.webhooks.queue = q
		m.webhooks.mu.Unlock()
	}
}

// webhookCountsTTL is how old the counted webhook series may get. Counting
// delivery and attempt rows grows with the tables; counting once per TTL
// in the background, not once per scrape, keeps a scrape off the database
// however often Prometheus (or several of them) scrape.
const webhookCountsTTL = 30 * time.Second

// webhookCollector reports the queue depth live from the engine's memory
// and the delivery and attempt counts from a cache of the database's.
// WebhookCounts counts webhook deliveries and attempts (sqlstore.Store).
type WebhookCounts interface {
	WebhookDeliveryCounts(ctx context.Context) ([]store.Count, error)
	WebhookAttemptCounts(ctx context.Context) ([]store.Count, error)
}

type webhookCollector struct {
	db  WebhookCounts
	log *slog.Logger
	ttl time.Duration

	mu         sync.Mutex
	queue      WebhookQueue
	counted    []prometheus.Metric
	countedAt  time.Time
	refreshing bool
}

func (c *webhookCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDesc
	ch <- clusterQueueDesc
	ch <- deliveriesDesc
	ch <- attemptsDesc
}

func (c *webhookCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	q := c.queue
	stale := time.Since(c.countedAt) > c.ttl
	first := c.countedAt.IsZero()
	if stale && !first && !c.refreshing {
		c.refreshing = true
		go c.refresh()
	}
	c.mu.Unlock()
	if q != nil {
		total := 0
		for team, n := range q.QueueDepth() {
			ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(n), team)
			total += n
		}
		ch <- prometheus.MustNewConstMetric(clusterQueueDesc, prometheus.GaugeValue, float64(total))
	}
	if first {
		c.refresh() // the first scrape waits once, rather than answer without the series
	}
	c.mu.Lock()
	counted := c.counted
	c.mu.Unlock()
	for _, m := range counted {
		ch <- m
	}
}

func (c *webhookCollector) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []prometheus.Metric
	out = c.count(ctx, out, deliveriesDesc, prometheus.GaugeValue, c.db.WebhookDeliveryCounts)
	out = c.count(ctx, out, attemptsDesc, prometheus.CounterValue, c.db.WebhookAttemptCounts)
	c.mu.Lock()
	c.counted, c.countedAt, c.refreshing = out, time.Now(), false
	c.mu.Unlock()
}

func (c *webhookCollector) count(ctx context.Context, out []prometheus.Metric, d *prometheus.Desc, vt prometheus.ValueType,
	counts func(context.Context) ([]store.Count, error)) []prometheus.Metric {
	rows, err := counts(ctx)
	if err != nil {
		c.log.Debug("metrics: webhook tables not readable", "err", err)
		return out
	}
	for _, r := range rows {
		out = append(out, prometheus.MustNewConstMetric(d, vt, r.N, r.Team, r.Label))
	}
	return out
}
