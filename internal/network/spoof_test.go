package network

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// These tests give the attacker everything a sandbox could ever get from a
// container escape short of the host: a process with all capabilities in
// its own sandbox network namespace (the runtime drops CAP_NET_RAW and
// CAP_NET_ADMIN as well, but the network must not depend on that). It then
// claims another sandbox's address and MAC and tries to receive that
// sandbox's traffic, and to send packets that carry its source address.

// nsHandle opens a netlink handle inside the namespace at path.
func nsHandle(t testing.TB, path string) *netlink.Handle {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// listenAs starts a TCP server in the namespace at path that answers every
// connection with name, so a client can tell who accepted it.
func listenAs(t testing.TB, path, addr, name string) net.Listener {
	t.Helper()
	var ln net.Listener
	var err error
	inNS(t, path, func() { ln, err = net.Listen("tcp4", addr) })
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, path, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, name)
			c.Close()
		}
	}()
	return ln
}

// rawSender is an AF_PACKET socket on eth0 of one namespace: it sends
// whole Ethernet frames, as a sandbox with CAP_NET_RAW can.
type rawSender struct {
	fd      int
	ifindex int
}

func newRawSender(t testing.TB, path string) *rawSender {
	t.Helper()
	eth, err := nsHandle(t, path).LinkByName(sandboxIf)
	if err != nil {
		t.Fatal(err)
	}
	s := &rawSender{ifindex: eth.Attrs().Index}
	inNS(t, path, func() {
		s.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
	})
	if err != nil {
		t.Fatalf("AF_PACKET socket in %s: %v", path, err)
	}
	t.Cleanup(func() { unix.Close(s.fd) })
	return s
}

func (s *rawSender) send(t testing.TB, frame []byte) {
	t.Helper()
	if err := unix.Sendto(s.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: s.ifindex}); err != nil {
		t.Fatalf("send raw frame: %v", err)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// arpFrame builds an ARP packet in an Ethernet frame from src.
func arpFrame(op uint16, dst, src net.HardwareAddr, senderIP netip.Addr, targetMAC net.HardwareAddr, targetIP netip.Addr) []byte {
	f := make([]byte, 0, 42)
	f = append(f, dst...)
	f = append(f, src...)
	f = binary.BigEndian.AppendUint16(f, unix.ETH_P_ARP)
	f = binary.BigEndian.AppendUint16(f, 1) // Ethernet
	f = binary.BigEndian.AppendUint16(f, unix.ETH_P_IP)
	f = append(f, 6, 4)
	f = binary.BigEndian.AppendUint16(f, op)
	f = append(f, src...)
	f = append(f, senderIP.AsSlice()...)
	f = append(f, targetMAC...)
	return append(f, targetIP.AsSlice()...)
}

// claim announces, from the namespace of s, that addr is at mac: a
// gratuitous ARP request and reply (broadcast) and a reply sent straight
// to the gateway, the ways a spoofer poisons its neighbours' caches.
func (s *rawSender) claim(t testing.TB, mac net.HardwareAddr, addr, gw netip.Addr, gwMAC net.HardwareAddr) {
	t.Helper()
	s.send(t, arpFrame(1, broadcastMAC, mac, addr, make(net.HardwareAddr, 6), addr))
	s.send(t, arpFrame(2, broadcastMAC, mac, addr, broadcastMAC, addr))
	if gwMAC != nil {
		s.send(t, arpFrame(2, gwMAC, mac, addr, gwMAC, gw))
	}
}

// gatewayMAC returns the MAC the namespace's eth0 resolved its gateway to
// (it resolves it on the first packet it routes).
func gatewayMAC(t testing.TB, path string, gw netip.Addr) net.HardwareAddr {
	t.Helper()
	h := nsHandle(t, path)
	eth, err := h.LinkByName(sandboxIf)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		// Any packet to the gateway makes the kernel resolve it.
		inNS(t, path, func() {
			if c, err := net.DialTimeout("udp4", netip.AddrPortFrom(gw, 9).String(), time.Second); err == nil {
				c.Write([]byte("x"))
				c.Close()
			}
		})
		neighs, err := h.NeighList(eth.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range neighs {
			if n.IP.Equal(gw.AsSlice()) && len(n.HardwareAddr) == 6 && n.State&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE|netlink.NUD_PERMANENT) != 0 {
				return n.HardwareAddr
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway %s never resolved in %s: %v", gw, path, neighs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sandboxGateway is the gateway a sandbox namespace routes through.
func sandboxGateway(t testing.TB, path string) netip.Addr {
	t.Helper()
	routes, err := nsHandle(t, path).RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Gw != nil && (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") {
			gw, _ := netip.AddrFromSlice(r.Gw.To4())
			return gw
		}
	}
	t.Fatalf("no default route in %s: %v", path, routes)
	return netip.Addr{}
}

// impersonate makes the namespace at path take over victim's identity as
// far as it can by itself: victim's address added next to its own and, if
// mac is set, that MAC on its eth0.
func impersonate(t testing.TB, path string, mac net.HardwareAddr, victim netip.Addr) {
	t.Helper()
	h := nsHandle(t, path)
	eth, err := h.LinkByName(sandboxIf)
	if err != nil {
		t.Fatal(err)
	}
	if mac != nil {
		must(t, h.LinkSetDown(eth))
		must(t, h.LinkSetHardwareAddr(eth, mac))
		must(t, h.LinkSetUp(eth))
	}
	must(t, h.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: victim.AsSlice(), Mask: net.CIDRMask(32, 32)}}))
	must(t, waitOperUp(h, sandboxIf))
}

func TestSpoofingSandboxCannotTakeOverAnothersTraffic(t *testing.T) {
	for _, cloneMAC := range []bool{false, true} {
		t.Run(fmt.Sprintf("cloneMAC=%v", cloneMAC), func(t *testing.T) {
			m, _ := newTestManager(t)
			aID, a := setup(t, m, true)
			_, b := setup(t, m, true)
			aAddr, _ := m.Address(aID)
			aEth, err := nsHandle(t, a).LinkByName(sandboxIf)
			if err != nil {
				t.Fatal(err)
			}
			aMAC := aEth.Attrs().HardwareAddr
			bEth, err := nsHandle(t, b).LinkByName(sandboxIf)
			if err != nil {
				t.Fatal(err)
			}
			bMAC := bEth.Attrs().HardwareAddr

			la := listenAs(t, a, "0.0.0.0:0", "A")
			port := la.Addr().(*net.TCPAddr).Port
			listenAs(t, b, fmt.Sprintf("0.0.0.0:%d", port), "B")
			target := netip.AddrPortFrom(aAddr, uint16(port)).String()
			if got, err := dial(t, "", target); err != nil || got != "A" {
				t.Fatalf("host → A at %s before the attack = %q, %v; want A", target, got, err)
			}

			gw := sandboxGateway(t, b)
			gwMAC := gatewayMAC(t, b, gw)
			claimMAC := bMAC
			if cloneMAC {
				claimMAC = aMAC
			}
			impersonate(t, b, claimMAC, aAddr)
			raw := newRawSender(t, b)
			for i := range 20 {
				raw.claim(t, claimMAC, aAddr, gw, gwMAC)
				time.Sleep(50 * time.Millisecond) // the host's ARP locktime is 1 s
				got, err := dial(t, "", target)
				if got == "B" {
					t.Fatalf("attempt %d: the host's connection to sandbox A (%s) was accepted by sandbox B\n%s", i, target, netDebug(a, b))
				}
				if err != nil || got != "A" {
					t.Fatalf("attempt %d: host → A at %s = %q, %v during the attack; want A's answer", i, target, got, err)
				}
			}
		})
	}
}

// udpSink collects datagrams arriving at a UDP socket in a namespace.
type udpSink struct {
	mu   sync.Mutex
	seen []string
	addr netip.AddrPort
}

func newUDPSink(t testing.TB, path string, ip netip.Addr) *udpSink {
	t.Helper()
	var pc net.PacketConn
	var err error
	inNS(t, path, func() { pc, err = net.ListenPacket("udp4", netip.AddrPortFrom(ip, 0).String()) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	s := &udpSink{addr: netip.MustParseAddrPort(pc.LocalAddr().String())}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.seen = append(s.seen, string(buf[:n]))
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *udpSink) has(payload string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.seen {
		if p == payload {
			return true
		}
	}
	return false
}

// sendUDPFrom sends one datagram from the namespace at path, bound to src.
func sendUDPFrom(t testing.TB, path string, src netip.Addr, dst netip.AddrPort, payload string) {
	t.Helper()
	var err error
	inNS(t, path, func() {
		var c *net.UDPConn
		c, err = net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return
		}
		defer c.Close()
		_, err = c.Write([]byte(payload))
	})
	if err != nil {
		t.Fatalf("send from %s to %s: %v", src, dst, err)
	}
}

func TestSpoofedSourceAddressIsDropped(t *testing.T) {
	m, _ := newTestManager(t)
	o := newOutside(t, m)
	aID, _ := setup(t, m, true)
	bID, b := setup(t, m, true)
	aAddr, _ := m.Address(aID)
	bAddr, _ := m.Address(bID)
	sink := newUDPSink(t, o.path, o.addr)
	impersonate(t, b, nil, aAddr)

	forged := []netip.Addr{aAddr, m.Gateway(), netip.MustParseAddr("192.0.2.77"), o.addr}
	deadline := time.Now().Add(3 * time.Second)
	own := "own-" + randHex(t, 8)
	for !sink.has(own) {
		// Positive control: B's own address gets through.
		sendUDPFrom(t, b, bAddr, sink.addr, own)
		if time.Now().After(deadline) {
			t.Fatalf("a datagram from sandbox B's own address %s never reached %s: the test proves nothing\n%s", bAddr, sink.addr, netDebug(b, o.path))
		}
		time.Sleep(50 * time.Millisecond)
	}
	h := nsHandle(t, b)
	eth, _ := h.LinkByName(sandboxIf)
	for _, src := range forged[1:] {
		if src != o.addr { // B may put any address on its eth0
			_ = h.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: src.AsSlice(), Mask: net.CIDRMask(32, 32)}})
		}
	}
	var payloads []string
	for _, src := range forged {
		if src == o.addr {
			continue // needs a raw socket; covered by the others
		}
		p := "forged-" + src.String() + "-" + randHex(t, 8)
		payloads = append(payloads, p)
		for range 5 {
			sendUDPFrom(t, b, src, sink.addr, p)
		}
	}
	time.Sleep(500 * time.Millisecond)
	for _, p := range payloads {
		if sink.has(p) {
			t.Errorf("a datagram sandbox B sent with a forged source got through: %s", strings.SplitN(p, "-", 3)[1])
		}
	}
	// And the real owner of the address still gets its replies.
	if got, err := dialFrom(t, m, aID, o); err != nil {
		t.Errorf("sandbox A cannot reach the outside after B's attempts: %v", err)
	} else if got != o.hostAddr.String() {
		t.Errorf("outside saw A as %s; want %s", got, o.hostAddr)
	}
}

// dialFrom connects from a sandbox to a fresh TCP server in the outside
// namespace and returns the address the server saw.
func dialFrom(t testing.TB, m *Manager, id string, o outside) (string, error) {
	t.Helper()
	srv := listen(t, o.path, o.addr.String()+":0")
	return dial(t, joinPath(t, m, id), srv.Addr().String())
}
