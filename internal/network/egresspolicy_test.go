package network

import (
	"context"
	"net/netip"
	"testing"
)

// A sandbox's policy narrows its egress: denyOut closes, allowOut (by
// address or by a name resolved on the host) reopens within what the
// server allows, a live change takes effect at once, and a torn-down
// sandbox's policy does not outlive it.
func TestSandboxEgressPolicy(t *testing.T) {
	m, _ := newTestManager(t)
	o := newOutside(t, m)
	m.lookup = func(_ context.Context, name string) ([]netip.Addr, error) {
		if name == "allowed.example" {
			return []netip.Addr{o.addr}, nil
		}
		return nil, nil
	}
	id, path := setup(t, m, true)
	srv := listen(t, o.path, o.addr.String()+":0").Addr().String()
	reach := func() bool { _, err := dial(t, path, srv); return err == nil }
	if !reach() {
		t.Fatalf("without a policy the sandbox cannot reach %s", srv)
	}
	set := func(allow, deny []string) {
		t.Helper()
		p, err := ParsePolicy(allow, deny)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.SetPolicy(t.Context(), id, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name        string
		allow, deny []string
		want        bool
	}{
		{"deny all", nil, []string{"0.0.0.0/0"}, false},
		{"deny the address", nil, []string{o.addr.String()}, false},
		{"allow wins over deny", []string{o.addr.String()}, []string{"0.0.0.0/0"}, true},
		{"allowed by name", []string{"allowed.example"}, []string{"0.0.0.0/0"}, true},
		{"another name only", []string{"other.example"}, []string{"0.0.0.0/0"}, false},
		{"deny another range", nil, []string{"1.1.1.0/24"}, true},
		{"cleared", nil, nil, true},
	} {
		set(tt.allow, tt.deny)
		if got := reach(); got != tt.want {
			t.Errorf("%s: sandbox reached the outside = %v, want %v", tt.name, got, tt.want)
		}
	}
	// A reinstall (flush ruleset, resolver change) keeps the policy.
	set(nil, []string{"0.0.0.0/0"})
	m.mu.Lock()
	err := m.fw.install(m.nft)
	m.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if reach() {
		t.Error("the policy was lost when the table was installed again")
	}
	if err := m.Teardown(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.policies[id]; ok {
		t.Error("a torn-down sandbox's policy is still kept")
	}
}

// allowOut never opens what the server blocks: a range outside the
// operator's --sandbox-allow-cidr stays closed.
func TestSandboxPolicyCannotOpenBlockedRanges(t *testing.T) {
	m, _ := newTestManager(t, func(c *Config) { c.AllowCIDRs = nil })
	o := newOutside(t, m)
	id, path := setup(t, m, true)
	srv := listen(t, o.path, o.addr.String()+":0").Addr().String()
	p, err := ParsePolicy([]string{"0.0.0.0/0", o.addr.String()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetPolicy(t.Context(), id, p); err != nil {
		t.Fatal(err)
	}
	if got, err := dial(t, path, srv); err == nil {
		t.Errorf("allowOut opened the reserved range: reached %s (seen as %s)", srv, got)
	}
}

func TestParsePolicy(t *testing.T) {
	for _, tt := range []struct {
		allow, deny []string
		ok          bool
	}{
		{[]string{"8.8.8.8", "1.1.1.0/24", "api.example.com"}, []string{"0.0.0.0/0"}, true},
		{[]string{"*.example.com"}, nil, false},
		{nil, []string{"example.com"}, false},
		{[]string{"::1"}, nil, false},
		{[]string{"1.2.3.4/33"}, nil, false},
		{[]string{"bad name!"}, nil, false},
	} {
		_, err := ParsePolicy(tt.allow, tt.deny)
		if (err == nil) != tt.ok {
			t.Errorf("ParsePolicy(%q, %q) = %v, want ok=%v", tt.allow, tt.deny, err, tt.ok)
		}
	}
}
