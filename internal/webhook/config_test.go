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
	if c.Workers != 16 || c.Timeout != 10*time.Second || c.DisableAfterFailures != 20 || c.Retention != 7*24*time.Hour {
		t.Errorf("defaults: %+v", c)
	}
}
