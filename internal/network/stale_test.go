package network

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// An address released by one server while the kernel still holds its
// sandbox's namespace (and so its veth) is taken by another server at
// once: rarer since each server's search starts at a random address (all
// started at the subnet's first), but a search may still come to it. The
// new sandbox must be reachable from the host and reach out, not lose
// its traffic to the old veth's route.
func TestAddressReusedByAnotherServerWhileTheOldVethLingers(t *testing.T) {
	leaseDir := t.TempDir()
	a, cfgA := newTestManager(t, func(c *Config) { c.LeaseDir = leaseDir })
	b, _ := newTestManager(t, func(c *Config) { c.LeaseDir, c.Subnet = leaseDir, cfgA.Subnet })
	o := newOutside(t, b)
	outside := listen(t, o.path, o.addr.String()+":0")

	idA, pathA := setup(t, a, true)
	addr, _ := a.Address(idA)
	// Something still holds A's namespace, as the kernel's deferred
	// cleanup does on a loaded machine: its veth outlives the lease.
	held, err := netns.GetFromPath(pathA)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { held.Close() })
	must(t, a.Teardown(t.Context(), idA))
	old := a.vethName(addr)
	if _, err := netlink.LinkByName(old); err != nil {
		t.Fatalf("the old veth %s is gone already (%v): the test would prove nothing", old, err)
	}

	b.ipam.next = addr // B's search comes to it first
	idB, pathB := setup(t, b, true)
	if got, _ := b.Address(idB); got != addr {
		t.Fatalf("server B got %s, not the released %s: the test would prove nothing", got, addr)
	}
	ln := listen(t, pathB, "0.0.0.0:0")
	target := netip.AddrPortFrom(addr, uint16(ln.Addr().(*net.TCPAddr).Port)).String()
	if _, err := dial(t, "", target); err != nil {
		t.Errorf("the host cannot reach the new holder of %s: %v\n%s", addr, err, netDebug(pathB))
	}
	if _, err := dial(t, pathB, outside.Addr().String()); err != nil {
		t.Errorf("the new holder of %s cannot reach out: %v\n%s", addr, err, netDebug(pathB))
	}
	if _, err := netlink.LinkByName(old); err == nil {
		t.Errorf("the stale veth %s of the old holder is still there", old)
	}
}
