package app

import (
	"net"
	"net/netip"
	"strings"
)

// SandboxDomain returns the domain the proxy routes sandbox host names
// (<port>-<id>.<domain>) on, and the one clients are told to build them
// from (E2B's `domain`, E2B_DOMAIN), which may carry a port.
//
// Without --domain a server listening on loopback (or every address) uses
// "localhost:<port>": <port>-<id>.localhost resolves to the loopback
// addresses wherever libnss-myhostname is in nsswitch.conf (the sbx
// package and scripts/install-deps.sh install it; systemd hosts have it),
// in curl and in browsers, so sandbox.getHost(port) reaches the server
// out of the box on the same machine. A server listening on one other
// address has no such name: it needs --domain with wildcard DNS.
func (c Config) SandboxDomain() (routing, advertised string) {
	if c.Domain != "" {
		host := c.Domain
		if h, _, err := net.SplitHostPort(c.Domain); err == nil {
			host = h
		}
		return host, c.Domain
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return "", ""
	}
	local := host == "" || host == "localhost"
	if a, err := netip.ParseAddr(host); err == nil {
		local = a.IsLoopback() || a.IsUnspecified()
	}
	if !local {
		return "", ""
	}
	if (port == "80" && !c.TLS.Enabled()) || (port == "443" && c.TLS.Enabled()) {
		return "localhost", "localhost"
	}
	return "localhost", "localhost:" + strings.TrimSpace(port)
}

// localhostResolves tells whether glibc on this host resolves names under
// localhost: nsswitch.conf's hosts line names myhostname (libnss-myhostname)
// or resolve (systemd-resolved), which both answer *.localhost with
// loopback. The server's own Go resolver is not what clients use, so the
// configuration is read rather than a lookup made.
func localhostResolves(nsswitch []byte) bool {
	for _, line := range strings.Split(string(nsswitch), "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "hosts:")
		if !ok {
			continue
		}
		for _, f := range strings.Fields(rest) {
			if f == "myhostname" || f == "resolve" {
				return true
			}
		}
	}
	return false
}
