package harness

import (
	"net"
	"net/netip"
	"net/url"
	"testing"

	"github.com/sbxdev/sbx/internal/netguard"
	"github.com/sbxdev/sbx/internal/rootfs"
)

// MirrorAllowFlags returns the `sbx serve --sandbox-allow-cidr` flags that
// let sandboxes reach the host's Debian mirror when it sits in a range
// sandbox egress blocks by default (a LAN mirror; on the project's CI
// machines deb.debian.org resolves to a documentation range). Tests whose
// templates run apt-get in build sandboxes pass them to StartServer; a
// public mirror needs none.
func MirrorAllowFlags(t testing.TB) []string {
	t.Helper()
	_, addrs := Mirror(t)
	var flags []string
	for _, s := range addrs {
		a, err := netip.ParseAddr(s)
		if err == nil && a.Is4() && netguard.Classify(a) != "" {
			flags = append(flags, "--sandbox-allow-cidr", a.String())
		}
	}
	return flags
}

// Mirror is the host's Debian mirror: its host name and its addresses
// (at least one), which servers started with MirrorAllowFlags let
// sandboxes reach.
func Mirror(t testing.TB) (host string, addrs []string) {
	t.Helper()
	mirror, err := rootfs.HostMirror("bookworm")
	if err != nil {
		t.Fatalf("find the host's Debian mirror: %v", err)
	}
	u, err := url.Parse(mirror)
	if err != nil || u.Hostname() == "" {
		t.Fatalf("host Debian mirror %q is not a URL: %v", mirror, err)
	}
	addrs, err = net.LookupHost(u.Hostname())
	if err != nil || len(addrs) == 0 {
		t.Fatalf("resolve the host's Debian mirror %s: %v", u.Hostname(), err)
	}
	return u.Hostname(), addrs
}
