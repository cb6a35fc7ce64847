package webhook

import (
	"testing"
	"time"
)

func TestDefaultRetrySchedule(t *testing.T) {
	t.Parallel()
	for _, r := range []float64{0, 0.5, 0.999999} {
		cfg := Config{Rand: func() float64 { return r }}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		first, ok := cfg.retryDelay(1)
		if !ok || first > 10*time.Second || first <= 0 {
			t.Errorf("rand=%v: first retry after %s, want within 10s", r, first)
		}
		var total, prev time.Duration
		n := 0
		for i := 1; ; i++ {
			d, ok := cfg.retryDelay(i)
			if !ok {
				break
			}
			if d < prev {
				t.Errorf("rand=%v: retry %d waits %s, less than the one before (%s)", r, i, d, prev)
			}
			total, prev, n = total+d, d, n+1
		}
		if total < 24*time.Hour {
			t.Errorf("rand=%v: retries span %s, want at least 24h", r, total)
		}
		if n != len(DefaultRetrySchedule) {
			t.Errorf("rand=%v: %d retries, want %d", r, n, len(DefaultRetrySchedule))
		}
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero value", Config{}, true},
		{"negative workers", Config{Workers: -1}, false},
		{"negative per webhook", Config{PerWebhook: -1}, false},
		{"per webhook above workers", Config{Workers: 4, PerWebhook: 5}, false},
		{"per webhook equal to workers", Config{Workers: 4, PerWebhook: 4}, true},
		{"one at a time", Config{PerWebhook: 1}, true},
		{"negative retry", Config{RetrySchedule: []time.Duration{-time.Second}}, false},
		{"jitter too big", Config{Jitter: 1}, false},
		{"bad cidr", Config{AllowCIDRs: []string{"10.0.0.0/33"}}, false},
		{"good cidr", Config{AllowCIDRs: []string{"10.0.0.0/8", "fd00::/8"}}, true},
	} {
		err := tt.cfg.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
	var c Config
	_ = c.Validate()
	if c.Workers != DefaultWorkers || c.PerWebhook != DefaultPerWebhook || c.Timeout != 10*time.Second || c.DisableAfterFailures != 20 || c.Retention != 7*24*time.Hour {
		t.Errorf("defaults: %+v", c)
	}
}

func TestConfigPerWebhookDefault(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		workers, perWebhook, want int
	}{
		{0, 0, DefaultPerWebhook},
		{2, 0, 2}, // fewer workers than the default: all of them
		{16, 3, 3},
		{1, 1, 1},
	} {
		c := Config{Workers: tt.workers, PerWebhook: tt.perWebhook}
		if err := c.Validate(); err != nil {
			t.Fatalf("workers %d, per webhook %d: %v", tt.workers, tt.perWebhook, err)
		}
		if c.PerWebhook != tt.want {
			t.Errorf("workers %d, per webhook %d: got %d, want %d", tt.workers, tt.perWebhook, c.PerWebhook, tt.want)
		}
	}
}

// TestShareAndReserve: a webhook's share of the workers shrinks as more
// webhooks are busy, never below one, and an eighth of the workers stays
// for webhooks with nothing in flight.
func TestShareAndReserve(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		workers, perWebhook, active, share, reserve int
	}{
		{64, 8, 0, 8, 8},
		{64, 8, 1, 8, 8},
		{64, 8, 8, 8, 8},
		{64, 8, 16, 4, 8},
		{64, 8, 200, 1, 8},
		{4, 4, 2, 2, 1},
		{1, 1, 5, 1, 0},
	} {
		c := Config{Workers: tt.workers, PerWebhook: tt.perWebhook}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		if got := c.share(tt.active); got != tt.share {
			t.Errorf("%d workers, %d per webhook, %d active: share %d, want %d", tt.workers, tt.perWebhook, tt.active, got, tt.share)
		}
		if got := c.reserve(); got != tt.reserve {
			t.Errorf("%d workers: reserve %d, want %d", tt.workers, got, tt.reserve)
		}
	}
}
