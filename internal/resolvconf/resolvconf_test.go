package resolvconf

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestForSandbox(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, host, want string
	}{
		{"plain", "nameserver 10.0.0.53\nsearch example.com\n", "nameserver 10.0.0.53\nsearch example.com\n"},
		{"stub resolver dropped", "nameserver 127.0.0.53\noptions edns0\nnameserver 192.0.2.1\n", "options edns0\nnameserver 192.0.2.1\n"},
		{"only loopback", "nameserver 127.0.0.1\nnameserver ::1\n", ""},
		{"empty", "", ""},
		{"garbage server", "nameserver bogus\n", ""},
		{"zoned link-local", "nameserver fe80::1%eth0\n", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := string(ForSandbox([]byte(tc.host))); got != tc.want {
				t.Errorf("ForSandbox(%q) = %q; want %q", tc.host, got, tc.want)
			}
		})
	}
}

func TestServers(t *testing.T) {
	t.Parallel()
	conf := "# comment\nnameserver 10.255.255.53\nnameserver 2001:db8::53\nsearch x\nnameserver 10.255.255.53\nnameserver bad\nnameserver ::ffff:192.0.2.9\n"
	want := []netip.Addr{netip.MustParseAddr("10.255.255.53"), netip.MustParseAddr("2001:db8::53"), netip.MustParseAddr("192.0.2.9")}
	if got := Servers([]byte(conf)); !slices.Equal(got, want) {
		t.Errorf("Servers = %v; want %v", got, want)
	}
}

// A host whose /etc/resolv.conf names only systemd-resolved's stub gives
// sandboxes the upstream servers behind it.
func TestLoadFallsBackToUpstream(t *testing.T) {
	dir := t.TempDir()
	host, up := filepath.Join(dir, "resolv.conf"), filepath.Join(dir, "upstream.conf")
	oldHost, oldUp := Host, Upstream
	Host, Upstream = host, up
	t.Cleanup(func() { Host, Upstream = oldHost, oldUp })

	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(host, "nameserver 127.0.0.53\noptions edns0 trust-ad\n")
	if conf, servers := Load(); conf != nil || servers != nil {
		t.Errorf("stub only, no upstream file: Load = %q, %v; want nil (the template's own)", conf, servers)
	}
	write(up, "nameserver 10.1.2.3\nnameserver 10.1.2.4\n")
	conf, servers := Load()
	if string(conf) != "nameserver 10.1.2.3\nnameserver 10.1.2.4\n" || len(servers) != 2 {
		t.Errorf("stub with upstream: Load = %q, %v", conf, servers)
	}
	write(host, "nameserver 10.9.9.9\n")
	if conf, servers := Load(); string(conf) != "nameserver 10.9.9.9\n" || len(servers) != 1 || servers[0] != netip.MustParseAddr("10.9.9.9") {
		t.Errorf("a reachable host resolver wins: Load = %q, %v", conf, servers)
	}
}
