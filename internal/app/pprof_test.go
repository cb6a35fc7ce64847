package app

import "testing"

func TestValidatePprof(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"", true},
		{"127.0.0.1:6060", true},
		{"[::1]:6060", true},
		{"localhost:6060", true},
		{"0.0.0.0:6060", false},
		{"192.0.2.2:6060", false},
		{":6060", false},
		{"6060", false},
	} {
		if err := validatePprof(tc.addr); (err == nil) != tc.ok {
			t.Errorf("validatePprof(%q) = %v, want ok=%v", tc.addr, err, tc.ok)
		}
	}
}
