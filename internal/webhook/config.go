package webhook

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"time"
)

// DefaultRetrySchedule is the wait before each retry: the first within
// 10 s, then roughly exponential, 27.7 h in total (at least 24.9 h with the
// default ±10 % jitter), 11 retries after the first attempt.
var DefaultRetrySchedule = []time.Duration{
	5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 4 * time.Hour, 8 * time.Hour, 12 * time.Hour,
}

// Default concurrency: PerWebhook in flight to one webhook at most, Workers
// over all of them. A worker is a goroutine and, while sending, a
// connection; 64 keep eight slow webhooks at full concurrency at once.
const (
	DefaultWorkers    = 64
	DefaultPerWebhook = 8
)

// Config is the webhook engine's configuration; the zero value plus
// Validate gives the production defaults.
type Config struct {
	// AllowPrivate lets webhooks reach private, loopback and link-local
	// addresses (sbx serve --webhook-allow-private; local development).
	AllowPrivate bool
	// AllowCIDRs are networks allowed even though they are private
	// (sbx serve --webhook-allow-cidr).
	AllowCIDRs []string
	// Workers is the number of concurrent deliveries over all webhooks
	// (sbx serve --webhook-workers; default DefaultWorkers).
	Workers int
	// PerWebhook is the number of concurrent deliveries to one webhook
	// (sbx serve --webhook-concurrency; default DefaultPerWebhook, or
	// Workers if fewer). When more webhooks have deliveries due than
	// Workers/PerWebhook, each gets an equal share of Workers (at least
	// one), so a slow or failing webhook holds at most its share.
	PerWebhook int
	// Timeout bounds one delivery attempt, connect to last byte (default 10 s).
	Timeout time.Duration
	// RetrySchedule is the wait before retry n (default DefaultRetrySchedule);
	// its length is the number of retries.
	RetrySchedule []time.Duration
	// Jitter spreads each retry wait by ±Jitter of its length (default 0.1;
	// negative disables it).
	Jitter float64
	// DisableAfter and DisableAfterFailures: a webhook whose attempts have
	// all failed for at least DisableAfter (default 48 h) and at least
	// DisableAfterFailures times in a row (default 20) is disabled, and a
	// webhook.disabled event is emitted.
	DisableAfter         time.Duration
	DisableAfterFailures int
	// Retention is how long finished deliveries and their attempt logs are
	// kept (default 7 days, as E2B keeps its delivery log).
	Retention time.Duration
	// Node names this server among those sharing the database (sbx serve
	// --node-name; default the host name). Webhook queue leases are held
	// by node: a restarted server takes its own back at once.
	Node string
	// Lease is how long a server holds a webhook's queue without renewing
	// it (renewed every second; default 3 × Timeout, at least 30 s): after a
	// server dies, its queues wait this long before another server sends
	// them. Servers' clocks must agree to well within it.
	Lease time.Duration
	// Now and Rand are the clock and the jitter source (tests).
	Now  func() time.Time
	Rand func() float64

	// hostAddrs overrides the host's interface addresses (tests).
	hostAddrs func() []netip.Addr

	allow []netip.Prefix
}

// Validate checks the configuration and fills in defaults.
func (c *Config) Validate() error {
	if c.Workers < 0 || c.PerWebhook < 0 || c.Timeout < 0 || c.DisableAfter < 0 || c.DisableAfterFailures < 0 {
		return fmt.Errorf("webhook config: workers, per-webhook concurrency, timeout, disable thresholds and max response body must not be negative")
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.PerWebhook == 0 {
		c.PerWebhook = min(DefaultPerWebhook, c.Workers)
	}
	if c.PerWebhook > c.Workers {
		return fmt.Errorf("webhook config: %d concurrent deliveries per webhook exceed the %d workers of all webhooks", c.PerWebhook, c.Workers)
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.RetrySchedule == nil {
		c.RetrySchedule = DefaultRetrySchedule
	}
	for i, d := range c.RetrySchedule {
		if d < 0 {
			return fmt.Errorf("webhook config: retry %d waits %s; waits must not be negative", i+1, d)
		}
	}
	if c.Jitter == 0 {
		c.Jitter = 0.1
	}
	if c.Jitter >= 1 {
		return fmt.Errorf("webhook config: jitter %.2f must be below 1", c.Jitter)
	}
	if c.DisableAfter == 0 {
		c.DisableAfter = 48 * time.Hour
	}
	if c.DisableAfterFailures == 0 {
		c.DisableAfterFailures = 20
	}
	if c.Retention < 0 {
		return fmt.Errorf("webhook config: retention %s must not be negative", c.Retention)
	}
	if c.Retention == 0 {
		c.Retention = 7 * 24 * time.Hour
	}
	if c.Node == "" {
		c.Node, _ = os.Hostname()
	}
	if c.Lease == 0 {
		c.Lease = max(3*c.Timeout, 30*time.Second)
	}
	if c.Lease < c.Timeout+3*c.renewEvery() {
		return fmt.Errorf("webhook config: lease %s must exceed the delivery timeout %s by at least %s", c.Lease, c.Timeout, 3*c.renewEvery())
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	c.allow = c.allow[:0]
	for _, s := range c.AllowCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("webhook config: allowed CIDR %q: %w (want e.g. 10.0.0.0/8)", s, err)
		}
		c.allow = append(c.allow, p.Masked())
	}
	return nil
}

// share is how many deliveries one webhook may have in flight while active
// webhooks have deliveries due or in flight: PerWebhook, unless the
// webhooks would then need more than Workers between them, in which case
// each gets an equal part (at least one). Without it, Workers/PerWebhook
// webhooks that time out would hold every worker and the healthy ones
// would wait a timeout for each delivery.
func (c *Config) share(active int) int {
	if active <= 0 {
		return c.PerWebhook
	}
	return max(1, min(c.PerWebhook, c.Workers/active))
}

// reserve is how many workers only the first delivery of a webhook may
// take (one with nothing in flight), never a webhook's second or later
// concurrent one: an eighth of them, at least one unless there is only one.
func (c *Config) reserve() int {
	if c.Workers <= 1 {
		return 0
	}
	return max(1, c.Workers/8)
}

// renewEvery is how often leases are renewed and free queues claimed.
func (c *Config) renewEvery() time.Duration {
	return min(time.Second, c.Lease/10)
}

// retryDelay returns the wait after failed attempt n (1-based) and whether
// another attempt is due at all.
func (c *Config) retryDelay(n int) (time.Duration, bool) {
	if n < 1 || n > len(c.RetrySchedule) {
		return 0, false
	}
	d := c.RetrySchedule[n-1]
	if c.Jitter > 0 {
		d = time.Duration(float64(d) * (1 + c.Jitter*(2*c.Rand()-1)))
	}
	return d, true
}
