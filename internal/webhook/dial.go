package webhook

import (
	"net"
	"net/netip"

	"github.com/sbxdev/sbx/internal/netguard"
)

// guardHint is how an operator allows a refused webhook destination.
const guardHint = "allow them with sbx serve --webhook-allow-private or --webhook-allow-cidr"

// guard is the SSRF check of deliveries: no private, reserved or host
// addresses unless the operator allowed them.
func (c *Config) guard() *netguard.Guard {
	return &netguard.Guard{AllowAll: c.AllowPrivate, Allow: c.allow, Hint: guardHint, HostAddrs: c.hostAddrs}
}

// checkAddr decides whether a webhook may connect to addr.
func (c *Config) checkAddr(addr netip.Addr) error { return c.guard().Check(addr) }

// dialer checks every address in its Control hook, after DNS resolution,
// so DNS rebinding cannot slip a private address past it.
func (c *Config) dialer() *net.Dialer { return c.guard().Dialer(c.Timeout) }
