package network

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Teardown does not delete a sandbox's veth pair: destroying the namespace
// makes the kernel remove both ends, in a batched cleanup that may run
// well after the address's lease is released (seconds on a loaded
// machine). Until then the old host end still routes the address, and the
// next holder's route is only appended behind it: the kernel keeps using
// the first, so the host's packets to the new sandbox (the proxy's direct
// path, replies to its egress) go into the dying namespace, and its
// packets fail the anti-spoofing check. Every new holder therefore
// removes the old links first. The address is this holder's (lease.go),
// so a link of the sbx design that routes it is stale, whichever server
// made it: other servers' sandboxes start at the same first address.

// addHostVeth creates the veth pair of v, replacing the stale links of
// earlier holders of its address.
func (m *Manager) addHostVeth(link *netlink.Veth, v *veth) error {
	err := m.host.LinkAdd(link)
	if errors.Is(err, unix.EEXIST) {
		// This server's own earlier holder: same name.
		if stale, lerr := m.host.LinkByName(v.name); lerr == nil {
			_ = m.host.LinkDel(stale)
		}
		link.Index = 0
		err = m.host.LinkAdd(link)
	}
	if err != nil {
		return fmt.Errorf("create veth %s: %w", v.name, err)
	}
	v.hostIndex = link.Attrs().Index
	return m.dropStaleRoutes(v)
}

// dropStaleRoutes deletes the links of another server's earlier holders
// of v's address. It runs before v's host end has an address, so a route
// to the address is somebody else's: one lookup in the common case.
func (m *Manager) dropStaleRoutes(v *veth) error {
	for range 8 { // each round removes one link; more would be a loop
		routes, err := m.host.RouteGet(v.addr.AsSlice())
		if err != nil || len(routes) == 0 || routes[0].LinkIndex == v.hostIndex {
			return nil // unroutable, or routed our way: nothing stale
		}
		l, err := m.host.LinkByIndex(routes[0].LinkIndex)
		if err != nil {
			if errors.As(err, new(netlink.LinkNotFoundError)) {
				continue // went while we looked
			}
			return fmt.Errorf("find the link that routes %s: %w", v.addr, err)
		}
		name := l.Attrs().Name
		if l.Type() != "veth" || !strings.HasPrefix(name, vethPrefix) {
			return nil // the default route, or something not ours to touch
		}
		m.log.Info("removing the stale veth of an earlier holder of a sandbox address", "addr", v.addr, "link", name)
		if err := m.host.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("remove stale veth %s, which still routes %s: %w", name, v.addr, err)
		}
	}
	return fmt.Errorf("address %s is still routed elsewhere after removing stale veths", v.addr)
}
