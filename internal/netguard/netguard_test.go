package netguard

import (
	"errors"
	"net/netip"
	"testing"
)

func TestGuardCheck(t *testing.T) {
	t.Parallel()
	host := func() []netip.Addr { return []netip.Addr{netip.MustParseAddr("5.6.7.8")} }
	g := &Guard{Allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}, Hint: "use --x", HostAddrs: host}
	for _, tt := range []struct {
		addr   string
		reason string // "" = allowed
	}{
		{"8.8.8.8", ""},
		{"2606:4700::1111", ""},
		{"127.0.0.1", "loopback"},
		{"::1", "loopback"},
		{"::ffff:127.0.0.1", "loopback"},
		{"10.0.0.1", "private"},
		{"10.1.2.3", ""}, // allowed by the operator
		{"172.16.0.1", "private"},
		{"192.168.1.1", "private"},
		{"169.254.169.254", "link-local (cloud metadata)"},
		{"100.64.0.1", "carrier-grade NAT"},
		{"0.0.0.0", "\"this network\""},
		{"192.0.2.2", "documentation (TEST-NET-1)"},
		{"224.0.0.1", "multicast"},
		{"255.255.255.255", "reserved"},
		{"fe80::1", "link-local"},
		{"fd00::1", "unique local (private)"},
		{"64:ff9b::a00:1", "NAT64 (reaches any IPv4, private included)"},
		{"5.6.7.8", "this host's own"},
	} {
		err := g.Check(netip.MustParseAddr(tt.addr))
		var de *DestinationError
		switch {
		case tt.reason == "" && err != nil:
			t.Errorf("%s: refused (%v), want allowed", tt.addr, err)
		case tt.reason != "" && !errors.As(err, &de):
			t.Errorf("%s: err = %v, want a DestinationError (%s)", tt.addr, err, tt.reason)
		case tt.reason != "" && de.Reason != tt.reason:
			t.Errorf("%s: reason %q, want %q", tt.addr, de.Reason, tt.reason)
		}
	}
	if err := (&Guard{AllowAll: true, HostAddrs: host}).Check(netip.MustParseAddr("127.0.0.1")); err != nil {
		t.Errorf("AllowAll refused loopback: %v", err)
	}
}

func TestLocalAddrsIncludesLoopback(t *testing.T) {
	t.Parallel()
	for _, a := range LocalAddrs() {
		if a.IsLoopback() {
			return
		}
	}
	t.Fatalf("LocalAddrs() = %v: no loopback address", LocalAddrs())
}

func TestParsePrefixes(t *testing.T) {
	t.Parallel()
	got, err := ParsePrefixes("--x", []string{"10.1.2.3/16", "192.168.5.5"})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("192.168.5.5/32")}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("ParsePrefixes = %v, want %v", got, want)
	}
	if _, err := ParsePrefixes("--x", []string{"nope"}); err == nil {
		t.Error("ParsePrefixes accepted \"nope\"")
	}
}
