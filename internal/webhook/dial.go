package webhook

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// blocked lists special-purpose ranges a webhook must not reach by default,
// beyond what netip's Is* methods cover.
var blocked = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),  // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved
	netip.MustParsePrefix("64:ff9b::/96"),   // NAT64 to any IPv4, private included
	netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64
	netip.MustParsePrefix("2001:db8::/32"),  // documentation
	netip.MustParsePrefix("fec0::/10"),      // deprecated site-local
	netip.MustParsePrefix("100::/64"),       // discard-only
	netip.MustParsePrefix("2001::/23"),      // IETF protocol assignments (Teredo, ...)
	netip.MustParsePrefix("::ffff:0:0/96"),  // unreachable after Unmap; kept for safety
	netip.MustParsePrefix("::/128"),         // unspecified
	netip.MustParsePrefix("255.255.255.255/32"),
}

// DestinationError reports a webhook address refused by the SSRF check.
type DestinationError struct {
	Addr   netip.Addr
	Reason string
}

func (e *DestinationError) Error() string {
	return fmt.Sprintf("destination %s refused: %s addresses are blocked; allow them with sbx serve --webhook-allow-private or --webhook-allow-cidr", e.Addr, e.Reason)
}

// checkAddr decides whether a webhook may connect to addr.
func (c *Config) checkAddr(addr netip.Addr) error {
	addr = addr.Unmap()
	if c.AllowPrivate {
		return nil
	}
	for _, p := range c.allow {
		if p.Contains(addr) {
			return nil
		}
	}
	reason := ""
	switch {
	case addr.IsLoopback():
		reason = "loopback"
	case addr.IsPrivate():
		reason = "private"
	case addr.IsLinkLocalUnicast(), addr.IsLinkLocalMulticast():
		reason = "link-local"
	case addr.IsUnspecified():
		reason = "unspecified"
	case addr.IsMulticast(), addr.IsInterfaceLocalMulticast():
		reason = "multicast"
	default:
		for _, p := range blocked {
			if p.Contains(addr) {
				reason = "reserved (" + p.String() + ")"
				break
			}
		}
	}
	if reason != "" {
		return &DestinationError{Addr: addr, Reason: reason}
	}
	return nil
}

// control runs in the dialer after DNS resolution, on the exact address
// about to be connected, so DNS rebinding cannot slip a private address past it.
func (c *Config) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("webhook dial %s: %w", address, err)
	}
	return c.checkAddr(ap.Addr())
}

func (c *Config) dialer() *net.Dialer {
	return &net.Dialer{Timeout: c.Timeout, Control: c.control}
}
