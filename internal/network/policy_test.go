package network

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// By default a sandbox reaches no reserved range (the outside stand-in
// sits in 198.18.0.0/15), but it does reach its resolvers on port 53, and
// only on port 53.
func TestEgressBlockedByDefaultExceptDNS(t *testing.T) {
	var resolver netip.Addr
	m, _ := newTestManager(t, func(c *Config) {
		c.AllowCIDRs = nil
		c.Resolvers = func() []netip.Addr { return []netip.Addr{resolver} }
	})
	o := newOutside(t, m)
	resolver = o.addr
	_, path := setup(t, m, true)
	other := listen(t, o.path, o.addr.String()+":0")
	dns := listen(t, o.path, o.addr.String()+":53")
	if got, err := dial(t, "", other.Addr().String()); err != nil || got != o.hostAddr.String() {
		t.Fatalf("host cannot reach the outside server: %q, %v", got, err)
	}
	if got, err := dial(t, path, other.Addr().String()); err == nil {
		t.Errorf("sandbox reached %s in a reserved range (seen as %s)", other.Addr(), got)
	}
	if _, err := dial(t, path, dns.Addr().String()); err != nil {
		t.Errorf("sandbox cannot reach its resolver at %s: %v\n%s", dns.Addr(), err, netDebug(path, o.path))
	}
}

// Each server's table guards its own sandboxes: what one server allows
// its sandboxes does not open another's.
func TestSandboxesOfTwoServersCannotReachEachOther(t *testing.T) {
	m2, cfg2 := newTestManager(t)
	m1, _ := newTestManager(t, func(c *Config) {
		c.AllowCIDRs = append(c.AllowCIDRs, netip.MustParsePrefix(cfg2.Subnet))
	})
	_, a := setup(t, m1, true)
	bID, b := setup(t, m2, true)
	bAddr, _ := m2.Address(bID)
	ln := listen(t, b, "0.0.0.0:0")
	target := netip.AddrPortFrom(bAddr, uint16(ln.Addr().(*net.TCPAddr).Port)).String()
	if _, err := dial(t, "", target); err != nil {
		t.Fatalf("host cannot reach %s: %v", target, err)
	}
	if got, err := dial(t, a, target); err == nil {
		t.Errorf("a sandbox of server 1 reached a sandbox of server 2 at %s (seen as %s)", target, got)
	}
}

// readSysctl reads a /proc/sys file as seen from the namespace at path.
func readSysctl(t *testing.T, path, name string) string {
	t.Helper()
	var b []byte
	var err error
	read := func() { b, err = os.ReadFile(filepath.Join("/proc/sys", name)) }
	if path == "" {
		read()
	} else {
		inNS(t, path, read)
	}
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return strings.TrimSpace(string(b))
}

func TestSandboxNamespaceSettings(t *testing.T) {
	m, _ := newTestManager(t)
	for _, internet := range []bool{false, true} {
		t.Run(fmt.Sprintf("internet=%v", internet), func(t *testing.T) {
			id, path := setup(t, m, internet)
			if got := strings.Join(strings.Fields(readSysctl(t, path, "net/ipv4/ping_group_range")), " "); got != "0 2147483647" {
				t.Errorf("ping_group_range = %q; want every group (ping without CAP_NET_RAW)", got)
			}
			if got := readSysctl(t, path, "net/ipv4/ip_unprivileged_port_start"); got != "0" {
				t.Errorf("ip_unprivileged_port_start = %q; want 0", got)
			}
			// ICMP datagram sockets depend on the group range alone, not on
			// capabilities: the kernel's default ("1 0") refuses even root.
			inNS(t, path, func() {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP)
				if err != nil {
					t.Errorf("ICMP datagram socket: %v", err)
				} else {
					unix.Close(fd)
				}
			})
			h := nsHandle(t, path)
			lo, _ := h.LinkByName("lo")
			if a, _ := h.AddrList(lo, netlink.FAMILY_V6); len(a) == 0 {
				t.Errorf("loopback lost ::1")
			}
			if !internet {
				return
			}
			eth, err := h.LinkByName(sandboxIf)
			if err != nil {
				t.Fatal(err)
			}
			if a, _ := h.AddrList(eth, netlink.FAMILY_V6); len(a) > 0 {
				t.Errorf("eth0 has IPv6 addresses %v", a)
			}
			if got := readSysctl(t, path, "net/ipv6/conf/eth0/disable_ipv6"); got != "1" {
				t.Errorf("eth0 disable_ipv6 = %q", got)
			}
			addrs, _ := h.AddrList(eth, netlink.FAMILY_V4)
			if len(addrs) != 1 || addrs[0].IPNet.String() != func() string { a, _ := m.Address(id); return a.String() + "/32" }() {
				t.Errorf("eth0 addresses %v; want the sandbox's /32 only", addrs)
			}
			// The host end: no IPv6, no ARP answers, a static entry for the sandbox.
			addr, veth, ok := m.DirectPath(id)
			if !ok || veth != m.vethName(addr) {
				t.Fatalf("DirectPath(%s) = %s, %q, %v", id, addr, veth, ok)
			}
			if got := readSysctl(t, "", "net/ipv6/conf/"+veth+"/disable_ipv6"); got != "1" {
				t.Errorf("host end %s: disable_ipv6 = %q", veth, got)
			}
			if got := readSysctl(t, "", "net/ipv4/conf/"+veth+"/arp_ignore"); got != "8" {
				t.Errorf("host end %s: arp_ignore = %q", veth, got)
			}
			hl, err := netlink.LinkByName(veth)
			if err != nil {
				t.Fatal(err)
			}
			if a, _ := netlink.AddrList(hl, netlink.FAMILY_V6); len(a) > 0 {
				t.Errorf("host end %s has IPv6 addresses %v", veth, a)
			}
			neighs, _ := netlink.NeighList(hl.Attrs().Index, netlink.FAMILY_V4)
			if len(neighs) != 1 || !neighs[0].IP.Equal(addr.AsSlice()) || neighs[0].State != netlink.NUD_PERMANENT ||
				neighs[0].HardwareAddr.String() != eth.Attrs().HardwareAddr.String() {
				t.Errorf("host end %s neighbours %v; want one permanent entry for %s at %s", veth, neighs, addr, eth.Attrs().HardwareAddr)
			}
		})
	}
}

// A restarted server finds its sandboxes' direct paths again, also when
// the address is gone from eth0 (gVisor moves it into its own stack); a
// sandbox an older build left on its bridge keeps its address but gets no
// direct path.
func TestRestartRecoversDirectPaths(t *testing.T) {
	m, cfg := newTestManager(t)
	id, path := setup(t, m, true)
	addr, veth, _ := m.DirectPath(id)
	h := nsHandle(t, path)
	eth, _ := h.LinkByName(sandboxIf)
	must(t, h.AddrDel(eth, &netlink.Addr{IPNet: hostNet(addr)}))

	legacyID := "l" + randHex(t, 15)
	// Any other address of the subnet: the first sandbox's can be anywhere
	// in it (this one was once its gateway + 7, which about one run in a
	// hundred also gave the first sandbox: the restart then saw one
	// address used twice and recovered neither).
	legacyAddr := m.ipam.gateway.Next().Next().Next().Next().Next().Next().Next()
	for legacyAddr == addr {
		legacyAddr = legacyAddr.Next()
	}
	legacyNS(t, cfg, legacyID, legacyAddr)

	m2, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if a, v, ok := m2.DirectPath(id); !ok || a != addr || v != veth {
		t.Errorf("after restart DirectPath(%s) = %s, %q, %v; want %s, %q", id, a, v, ok, addr, veth)
	}
	if a, ok := m2.Address(legacyID); !ok || a != legacyAddr {
		t.Errorf("old-bridge sandbox: Address = %s, %v; want %s", a, ok, legacyAddr)
	}
	if _, _, ok := m2.DirectPath(legacyID); ok {
		t.Errorf("old-bridge sandbox got a direct path")
	}
	must(t, m2.Teardown(t.Context(), legacyID))
}

// legacyNS makes a namespace the way older builds did: eth0 with addr/24,
// its host end named like theirs (here not attached to any bridge).
func legacyNS(t *testing.T, cfg Config, id string, addr netip.Addr) {
	t.Helper()
	path := filepath.Join(cfg.NetnsDir, id)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	m := &Manager{}
	pin := func(ns netns.NsHandle) error { // on its name, as those builds did
		return unix.Mount("/proc/self/fd/"+strconv.Itoa(int(ns)), path, "none", unix.MS_BIND, "")
	}
	nh, err := m.inNewNS(pin, func(nh *netlink.Handle, ns netns.NsHandle) error {
		name := "sbt" + randHex(t, 12)
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: sandboxIf,
			PeerNamespace: netlink.NsFd(int(ns))}); err != nil {
			return err
		}
		eth, err := nh.LinkByName(sandboxIf)
		if err != nil {
			return err
		}
		return nh.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(24, 32)}})
	})
	if err != nil {
		t.Fatal(err)
	}
	nh.Close()
	t.Cleanup(func() {
		_ = unix.Unmount(path, unix.MNT_DETACH)
		_ = os.Remove(path)
	})
}
