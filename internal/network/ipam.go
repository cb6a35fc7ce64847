package network

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// ipam hands out sandbox addresses from the subnet. The first usable
// address belongs to the bridge (the sandboxes' gateway). It is not safe
// for concurrent use; the Manager holds its lock around it.
type ipam struct {
	prefix  netip.Prefix
	gateway netip.Addr
	last    netip.Addr // broadcast address, never handed out
	next    netip.Addr // where the search for a free address starts
	byID    map[string]netip.Addr
	used    map[netip.Addr]string
	leases  leases                 // machine-wide, shared with other servers
	owner   func(id string) string // the lease owner of a sandbox (its netns path)
}

func newIPAM(subnet string) (*ipam, error) {
	p, err := netip.ParsePrefix(subnet)
	if err != nil {
		return nil, errdefs.Invalid("network subnet %q is not a CIDR like 10.88.0.0/16: %v", subnet, err)
	}
	p = p.Masked()
	if !p.Addr().Is4() || p.Bits() > 29 || p.Bits() < 8 {
		return nil, errdefs.Invalid("network subnet %q: use an IPv4 prefix between /8 and /29", subnet)
	}
	gw := p.Addr().Next()
	// The search starts at a random usable address (all but the network,
	// gateway and broadcast addresses). Starting at the first, every
	// server on the host (and a server restarted) handed out the
	// addresses another had just freed, whose stale veths and conntrack
	// entries then reached the new sandbox.
	usable := uint32(1)<<(32-p.Bits()) - 3
	return &ipam{
		prefix: p, gateway: gw, last: lastAddr(p), next: addrFrom(u32(gw.Next()) + rand.Uint32N(usable)),
		byID: map[string]netip.Addr{}, used: map[netip.Addr]string{},
	}, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	return addrFrom(u32(p.Addr()) | (uint32(1)<<(32-p.Bits()) - 1))
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addrFrom(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// reserve records an address found in an existing namespace (restart).
func (m *ipam) reserve(id string, a netip.Addr) error {
	if !m.prefix.Contains(a) || a == m.gateway || a == m.last {
		return fmt.Errorf("address %s of sandbox %s is outside the usable range of %s", a, id, m.prefix)
	}
	if owner, ok := m.used[a]; ok && owner != id {
		return fmt.Errorf("address %s is used by both %s and %s", a, owner, id)
	}
	m.used[a], m.byID[id] = id, a
	return m.leases.put(a, m.ownerOf(id))
}

func (m *ipam) ownerOf(id string) string {
	if m.owner == nil {
		return id
	}
	return m.owner(id)
}

// allocate returns a free address, searching round-robin (wrapping at the
// end of the range) from the last one handed out so that a just-released
// address is not reused at once (a stale conntrack entry or ARP cache
// would otherwise hit the new owner).
func (m *ipam) allocate(id string) (netip.Addr, error) {
	if a, ok := m.byID[id]; ok {
		return a, nil
	}
	start := m.next
	for a := start; ; {
		if _, taken := m.used[a]; !taken {
			ok, err := m.leases.take(a, m.ownerOf(id))
			if err != nil {
				return netip.Addr{}, err
			}
			if ok {
				m.used[a], m.byID[id] = id, a
				m.next = m.step(a)
				return a, nil
			}
		}
		if a = m.step(a); a == start {
			break
		}
	}
	return netip.Addr{}, errdefs.Exhausted("no free address left in %s for sandbox %s: use a larger subnet", m.prefix, id)
}

func (m *ipam) step(a netip.Addr) netip.Addr {
	if a = a.Next(); a == m.last || !m.prefix.Contains(a) {
		return m.gateway.Next()
	}
	return a
}

func (m *ipam) release(id string) {
	if a, ok := m.byID[id]; ok {
		m.leases.drop(a, m.ownerOf(id))
		delete(m.used, a)
		delete(m.byID, id)
	}
}
