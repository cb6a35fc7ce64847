// Package netguard decides which addresses the host may connect to on a
// tenant's behalf (webhook deliveries, registry pulls) and which ranges
// sandbox egress must not reach. A tenant chooses the URL; without this
// check it could make the host call its own services, the cloud metadata
// endpoint or the private network the host sits in (SSRF).
//
// The check belongs in the dialer, after DNS resolution, on the exact
// address about to be connected (Guard.Control), so DNS rebinding cannot
// slip a private address past a check made on the name.
package netguard

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// Rule is one blocked range and why it is blocked.
type Rule struct {
	Prefix netip.Prefix
	Reason string
}

func rule(cidr, reason string) Rule { return Rule{netip.MustParsePrefix(cidr), reason} }

// Blocked lists every range that is not the public internet: a tenant has
// no business reaching any of them through the host. Sandbox egress rules
// (internal/network) block the IPv4 part of the same list.
var Blocked = []Rule{
	rule("0.0.0.0/8", "\"this network\""),
	rule("10.0.0.0/8", "private"),
	rule("100.64.0.0/10", "carrier-grade NAT"),
	rule("127.0.0.0/8", "loopback"),
	rule("169.254.0.0/16", "link-local (cloud metadata)"),
	rule("172.16.0.0/12", "private"),
	rule("192.0.0.0/24", "IETF protocol assignments"),
	// Documentation ranges route nowhere on the internet, but a host may
	// well sit in one (this project's CI machines do: 192.0.2.0/24).
	rule("192.0.2.0/24", "documentation (TEST-NET-1)"),
	rule("192.88.99.0/24", "6to4 relay anycast"),
	rule("192.168.0.0/16", "private"),
	rule("198.18.0.0/15", "benchmarking"),
	rule("198.51.100.0/24", "documentation (TEST-NET-2)"),
	rule("203.0.113.0/24", "documentation (TEST-NET-3)"),
	rule("224.0.0.0/4", "multicast"),
	rule("240.0.0.0/4", "reserved"), // includes 255.255.255.255
	rule("::/128", "unspecified"),
	rule("::1/128", "loopback"),
	rule("::ffff:0:0/96", "IPv4-mapped"), // unreachable after Unmap; kept for safety
	rule("64:ff9b::/96", "NAT64 (reaches any IPv4, private included)"),
	rule("64:ff9b:1::/48", "local-use NAT64"),
	rule("100::/64", "discard-only"),
	rule("2001::/23", "IETF protocol assignments (Teredo, ...)"),
	rule("2001:db8::/32", "documentation"),
	rule("2002::/16", "6to4 (embeds any IPv4)"),
	rule("fc00::/7", "unique local (private)"),
	rule("fe80::/10", "link-local"),
	rule("fec0::/10", "deprecated site-local"),
	rule("ff00::/8", "multicast"),
}

// Classify returns why addr is blocked by default, or "" for a public
// internet address. It does not know the host's own addresses (see Guard).
func Classify(addr netip.Addr) string {
	addr = addr.Unmap()
	for _, r := range Blocked {
		if r.Prefix.Contains(addr) {
			return r.Reason
		}
	}
	return ""
}

// DestinationError reports an address refused by a Guard.
type DestinationError struct {
	Addr   netip.Addr
	Reason string
	Hint   string // how an operator allows it
}

func (e *DestinationError) Error() string {
	msg := fmt.Sprintf("destination %s refused: %s addresses are blocked", e.Addr, e.Reason)
	if e.Hint != "" {
		msg += "; " + e.Hint
	}
	return msg
}

// Guard decides whether a connection made on a tenant's behalf may go to
// an address: not to a Blocked range and not to any address of the host's
// own interfaces (a public eth0 address reaches the host's services as
// surely as 127.0.0.1 does), unless the operator allowed it.
type Guard struct {
	// AllowAll turns the check off (local development: webhooks to a
	// receiver on loopback, a registry on the LAN).
	AllowAll bool
	// Allow lists ranges allowed despite being blocked.
	Allow []netip.Prefix
	// Hint tells the operator how to allow a refused address, e.g.
	// "allow them with sbx serve --webhook-allow-private or --webhook-allow-cidr".
	Hint string
	// HostAddrs returns the host's own interface addresses; nil means
	// LocalAddrs.
	HostAddrs func() []netip.Addr
}

// Check returns a *DestinationError when addr must not be reached.
func (g *Guard) Check(addr netip.Addr) error {
	addr = addr.Unmap()
	if g.AllowAll {
		return nil
	}
	for _, p := range g.Allow {
		if p.Contains(addr) {
			return nil
		}
	}
	reason := Classify(addr)
	if reason == "" {
		hostAddrs := g.HostAddrs
		if hostAddrs == nil {
			hostAddrs = LocalAddrs
		}
		for _, h := range hostAddrs() {
			if h == addr {
				reason = "this host's own"
				break
			}
		}
	}
	if reason == "" {
		return nil
	}
	return &DestinationError{Addr: addr, Reason: reason, Hint: g.Hint}
}

// Control is a net.Dialer Control hook: it runs after DNS resolution, on
// the address about to be connected.
func (g *Guard) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("dial %s: %w", address, err)
	}
	return g.Check(ap.Addr())
}

// Dialer returns a dialer whose every connection passes Check.
func (g *Guard) Dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, Control: g.Control}
}

// ParsePrefixes parses CIDRs (or single addresses) given on the command
// line; flag names the flag in errors.
func ParsePrefixes(flag string, cidrs []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%s %q: want a CIDR such as 10.0.0.0/8 or an address: %w", flag, s, err)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// localAddrTTL bounds how stale the cached interface addresses may be: an
// address added to the host is guarded within this time.
const localAddrTTL = 2 * time.Second

var local struct {
	mu    sync.Mutex
	at    time.Time
	addrs []netip.Addr
}

// LocalAddrs returns the addresses of the host's network interfaces (of the
// network namespace sbx runs in), cached for a couple of seconds: a dial
// must not cost a netlink dump.
func LocalAddrs() []netip.Addr {
	local.mu.Lock()
	defer local.mu.Unlock()
	if time.Since(local.at) < localAddrTTL && local.addrs != nil {
		return local.addrs
	}
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		return local.addrs // keep the last good answer
	}
	addrs := make([]netip.Addr, 0, len(ifAddrs))
	for _, a := range ifAddrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				addrs = append(addrs, ip.Unmap())
			}
		}
	}
	local.addrs, local.at = addrs, time.Now()
	return addrs
}
