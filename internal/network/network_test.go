package network

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// requireRoot skips without root, or fails when SBX_REQUIRE_INTEGRATION=1.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("SBX_REQUIRE_INTEGRATION") == "1" {
		t.Fatal("SBX_REQUIRE_INTEGRATION=1 but the network tests need root")
	}
	t.Skip("needs root to create network namespaces")
}

func randHex(t testing.TB, n int) string {
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)[:n]
}

func randByte(t testing.TB) int {
	b := make([]byte, 1)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return int(b[0])
}

// newTestManager uses its own bridge, subnet and directory, and removes
// all of it at the end, so tests neither see nor disturb a running sbx.
func newTestManager(t testing.TB) (*Manager, Config) {
	t.Helper()
	requireRoot(t)
	cfg := Config{
		NetnsDir: t.TempDir(),
		Bridge:   "sbt" + randHex(t, 8),
		Subnet:   fmt.Sprintf("10.%d.%d.0/24", 200+randByte(t)%50, randByte(t)),
	}
	m, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ids, _ := m.List()
		for _, id := range ids {
			if err := m.Teardown(context.Background(), id); err != nil {
				t.Errorf("cleanup Teardown(%s): %v", id, err)
			}
		}
		if err := m.RemoveBridge(context.Background()); err != nil {
			t.Errorf("RemoveBridge: %v", err)
		}
		m.Close()
	})
	return m, cfg
}

func setup(t testing.TB, m *Manager, internet bool) (id, path string) {
	t.Helper()
	id = "n" + randHex(t, 15)
	path, err := m.Setup(t.Context(), id, internet)
	if err != nil {
		t.Fatalf("Setup(%s, internet=%v): %v", id, internet, err)
	}
	return id, path
}

// inNS runs fn on an OS thread inside the namespace at path. Sockets made
// there stay in that namespace, wherever they are used afterwards.
func inNS(t testing.TB, path string, fn func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- err
			return
		}
		defer orig.Close()
		ns, err := netns.GetFromPath(path)
		if err != nil {
			done <- err
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			done <- err
			return
		}
		fn()
		if err := netns.Set(orig); err != nil {
			done <- err // thread stays locked and is discarded
			return
		}
		goruntime.UnlockOSThread()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatalf("enter namespace %s: %v", path, err)
	}
}

// listen starts a TCP server in the namespace at path ("" = host) that
// answers each connection with the address it sees the client at.
func listen(t testing.TB, path, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	var err error
	open := func() { ln, err = net.Listen("tcp4", addr) }
	if path == "" {
		open()
	} else {
		inNS(t, path, open)
	}
	if err != nil {
		t.Fatalf("listen on %s in %q: %v", addr, path, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	return ln
}

// dial connects from the namespace at path ("" = host) and returns the
// client address the server reported.
func dial(t testing.TB, path, addr string) (string, error) {
	t.Helper()
	var c net.Conn
	var err error
	open := func() {
		// A dropped SYN waits for the timeout; a refused or unroutable one
		// fails at once. Either way the connection does not happen.
		c, err = net.DialTimeout("tcp4", addr, 700*time.Millisecond)
	}
	if path == "" {
		open()
	} else {
		inNS(t, path, open)
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return line[:len(line)-1], nil
}

func links(t testing.TB, path string) []string {
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
	defer h.Close()
	ls, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range ls {
		names = append(names, l.Attrs().Name)
	}
	return names
}

// outside is a stand-in for the internet: another namespace, reached from
// the host through its own veth pair and routed (not bridged), so traffic
// to it goes through the host's FORWARD and NAT paths and never leaves
// this machine.
type outside struct {
	path     string
	addr     netip.Addr // the server's address
	hostAddr netip.Addr // the host's end, which masqueraded traffic comes from
}

func newOutside(t *testing.T, m *Manager) outside {
	t.Helper()
	r := randByte(t)
	o := outside{
		addr:     netip.MustParseAddr(fmt.Sprintf("198.18.%d.2", r)),
		hostAddr: netip.MustParseAddr(fmt.Sprintf("198.18.%d.1", r)),
	}
	id := "o" + randHex(t, 15)
	var err error
	// A loopback-only namespace from the manager, then a routed veth by hand.
	if o.path, err = m.Setup(t.Context(), id, false); err != nil {
		t.Fatalf("outside namespace: %v", err)
	}
	ns, err := netns.GetFromPath(o.path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	hostName := "sbo" + randHex(t, 8)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns))}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("outside veth: %v", err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(hostName); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	hl, _ := netlink.LinkByName(hostName)
	must(t, netlink.AddrAdd(hl, &netlink.Addr{IPNet: &net.IPNet{IP: o.hostAddr.AsSlice(), Mask: net.CIDRMask(30, 32)}}))
	must(t, netlink.LinkSetUp(hl))
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	eth, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	must(t, h.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: o.addr.AsSlice(), Mask: net.CIDRMask(30, 32)}}))
	must(t, h.LinkSetUp(eth))
	hh, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	defer hh.Close()
	must(t, waitOperUp(hh, hostName))
	must(t, waitOperUp(h, "eth0"))
	return o
}

// netDebug describes the host's and the namespaces' links, addresses,
// routes and neighbours, for failure messages.
func netDebug(paths ...string) string {
	script := "ip -br link; ip -br addr; ip route; ip neigh"
	for _, p := range paths {
		script += "; echo '--- " + p + "'; nsenter --net=" + p + " sh -c 'ip -br link; ip -br addr; ip route; ip neigh'"
	}
	out, _ := exec.Command("sh", "-c", script).CombinedOutput()
	return string(out)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestLoopbackOnly(t *testing.T) {
	m, _ := newTestManager(t)
	_, path := setup(t, m, false)
	if got := links(t, path); !slices.Equal(got, []string{"lo"}) {
		t.Errorf("links without internet = %v; want [lo]", got)
	}
	ln := listen(t, path, "127.0.0.1:0")
	if _, err := dial(t, path, ln.Addr().String()); err != nil {
		t.Errorf("loopback inside the namespace does not work: %v", err)
	}
	// The same port on the host's loopback is a different socket (or none).
	if got, err := dial(t, "", ln.Addr().String()); err == nil && got == "127.0.0.1" {
		t.Logf("host has its own listener on %s (not the namespace's)", ln.Addr())
	}
	o := newOutside(t, m)
	srv := listen(t, o.path, o.addr.String()+":0")
	if _, err := dial(t, path, srv.Addr().String()); err == nil {
		t.Errorf("namespace without internet reached %s", srv.Addr())
	}
}

func TestInternetThroughNAT(t *testing.T) {
	m, _ := newTestManager(t)
	o := newOutside(t, m)
	srv := listen(t, o.path, o.addr.String()+":0")
	if got, err := dial(t, "", srv.Addr().String()); err != nil || got != o.hostAddr.String() {
		dbg := netDebug(o.path)
		t.Fatalf("host cannot reach the outside server: %q, %v; the test network is broken\n%s", got, err, dbg)
	}
	id, path := setup(t, m, true)
	if got := links(t, path); !slices.Contains(got, "eth0") || !slices.Contains(got, "lo") {
		t.Errorf("links with internet = %v; want lo and eth0", got)
	}
	got, err := dial(t, path, srv.Addr().String())
	if err != nil {
		dbg := netDebug(path, o.path)
		t.Fatalf("sandbox %s cannot reach the outside server: %v\n%s", id, err, dbg)
	}
	if got != o.hostAddr.String() {
		t.Errorf("outside server saw the sandbox as %s; want the masqueraded host address %s", got, o.hostAddr)
	}
	if fwd, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); string(fwd) != "1\n" {
		t.Errorf("ip_forward = %q; want 1", fwd)
	}
}

func TestSandboxesCannotReachEachOther(t *testing.T) {
	m, _ := newTestManager(t)
	aID, a := setup(t, m, true)
	_, b := setup(t, m, true)
	aAddr, ok := m.Address(aID)
	if !ok {
		t.Fatalf("no address for sandbox %s", aID)
	}
	ln := listen(t, a, "0.0.0.0:0")
	target := netip.AddrPortFrom(aAddr, uint16(ln.Addr().(*net.TCPAddr).Port)).String()
	// Positive control: the listener is reachable at that address from the host.
	if _, err := dial(t, "", target); err != nil {
		t.Fatalf("host cannot reach sandbox A's listener at %s: %v; the test proves nothing", target, err)
	}
	if got, err := dial(t, b, target); err == nil {
		t.Errorf("sandbox B reached sandbox A at %s (seen as %s)", target, got)
	}
}

func TestSandboxCannotReachHostServices(t *testing.T) {
	m, _ := newTestManager(t)
	_, path := setup(t, m, true)
	ln := listen(t, "", "0.0.0.0:0")
	port := ln.Addr().(*net.TCPAddr).Port
	targets := []string{m.Gateway().String()}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() && !ipn.IP.Equal(m.Gateway().AsSlice()) {
				targets = append(targets, ipn.IP.String()) // the host's other addresses
			}
		}
	}
	for i, ip := range targets {
		target := net.JoinHostPort(ip, fmt.Sprint(port))
		if _, err := dial(t, "", target); err != nil {
			if i == 0 {
				t.Fatalf("host cannot reach its own listener at %s: %v", target, err)
			}
			// Other tests' and servers' bridges come and go meanwhile.
			t.Logf("skipping %s, gone from the host: %v", target, err)
			continue
		}
		if got, err := dial(t, path, target); err == nil {
			t.Errorf("sandbox reached a host service at %s (seen as %s)", target, got)
		}
	}
}

func TestFirewallRulesConvergeAndSurviveBridgeLoss(t *testing.T) {
	m, cfg := newTestManager(t)
	setup(t, m, true)
	in, fwd, nat := m.chains()
	rules := func() string {
		var all []string
		for _, args := range [][]string{{"-S", in}, {"-S", fwd}, {"-t", "nat", "-S", nat}, {"-S", "INPUT"}, {"-S", "FORWARD"}, {"-t", "nat", "-S", "POSTROUTING"}} {
			out, err := exec.Command("iptables", args...).CombinedOutput()
			if err != nil {
				t.Fatalf("iptables %v: %v: %s", args, err, out)
			}
			all = append(all, string(out))
		}
		return strings.Join(all, "")
	}
	before := rules()
	for _, want := range []string{"-A " + in + " -j DROP", "-j MASQUERADE", "-A INPUT -i " + cfg.Bridge + " -j " + in} {
		if !strings.Contains(before, want) {
			t.Errorf("rules lack %q:\n%s", want, before)
		}
	}
	// A restarted server converges to the same rules, without duplicates.
	m2, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	setup(t, m2, true)
	if after := rules(); after != before {
		t.Errorf("rules changed after a restart:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// The bridge removed by hand comes back at the next Setup.
	br, err := netlink.LinkByName(cfg.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	must(t, netlink.LinkDel(br))
	id, _ := setup(t, m2, true)
	if _, err := netlink.LinkByName(cfg.Bridge); err != nil {
		t.Errorf("bridge %s not recreated: %v", cfg.Bridge, err)
	}
	if _, ok := m2.Address(id); !ok {
		t.Errorf("sandbox %s has no address", id)
	}
}

func TestTeardownIsIdempotent(t *testing.T) {
	m, _ := newTestManager(t)
	id, path := setup(t, m, true)
	addr, _ := m.Address(id)
	for i := range 2 {
		if err := m.Teardown(t.Context(), id); err != nil {
			t.Fatalf("Teardown #%d: %v", i+1, err)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace file %s still exists: %v", path, err)
	}
	// The kernel removes the veth pair with the namespace, asynchronously.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := netlink.LinkByName(vethName(id)); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("veth %s still exists after the namespace was removed", vethName(id))
		}
		time.Sleep(time.Millisecond)
	}
	if _, ok := m.Address(id); ok {
		t.Errorf("address %s still allocated", addr)
	}
	if ids, _ := m.List(); slices.Contains(ids, id) {
		t.Errorf("List still has %s", id)
	}
	if err := m.Teardown(t.Context(), "never"+randHex(t, 6)); err != nil {
		t.Errorf("Teardown of an unknown id: %v", err)
	}
}

func TestSetupErrors(t *testing.T) {
	m, _ := newTestManager(t)
	id, _ := setup(t, m, false)
	if _, err := m.Setup(t.Context(), id, false); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("second Setup(%s) = %v; want already exists", id, err)
	}
	if got := links(t, m.nsPath(id)); !slices.Equal(got, []string{"lo"}) {
		t.Errorf("existing namespace is no longer a namespace: links %v", got)
	}
	for _, bad := range []string{"", "../x", "UPPER", "a/b"} {
		if _, err := m.Setup(t.Context(), bad, false); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Setup(%q) = %v; want invalid argument", bad, err)
		}
	}
}

func TestRestartRecoversAddresses(t *testing.T) {
	m, cfg := newTestManager(t)
	id, _ := setup(t, m, true)
	quiet, _ := setup(t, m, false)
	addr, _ := m.Address(id)

	m2, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("New after restart: %v", err)
	}
	defer m2.Close()
	ids, err := m2.List()
	if err != nil || !slices.Contains(ids, id) || !slices.Contains(ids, quiet) {
		t.Fatalf("List after restart = %v, %v; want %s and %s", ids, err, id, quiet)
	}
	if got, ok := m2.Address(id); !ok || got != addr {
		t.Errorf("recovered address of %s = %s, %v; want %s", id, got, ok, addr)
	}
	for range 3 {
		nid := "r" + randHex(t, 15)
		if _, err := m2.Setup(t.Context(), nid, true); err != nil {
			t.Fatalf("Setup after restart: %v", err)
		}
		if got, _ := m2.Address(nid); got == addr {
			t.Errorf("address %s handed out twice (to %s and %s)", addr, id, nid)
		}
		if err := m2.Teardown(t.Context(), nid); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	requireRoot(t)
	tests := []Config{
		{NetnsDir: ""},
		{NetnsDir: t.TempDir(), Subnet: "10.88.0.0"},
		{NetnsDir: t.TempDir(), Subnet: "fd00::/64"},
		{NetnsDir: t.TempDir(), Subnet: "10.0.0.0/30"},
		{NetnsDir: t.TempDir(), Bridge: "a-very-long-bridge-name"},
		{NetnsDir: t.TempDir(), Bridge: "bad name"},
	}
	for _, cfg := range tests {
		if _, err := New(cfg, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("New(%+v) = %v; want invalid argument", cfg, err)
		}
	}
}

func BenchmarkSetupTeardown(b *testing.B) {
	for _, internet := range []bool{false, true} {
		b.Run(fmt.Sprintf("internet=%v", internet), func(b *testing.B) {
			m, _ := newTestManager(b)
			// The first internet Setup creates the bridge and firewall.
			id, _ := setup(b, m, internet)
			must(b, m.Teardown(b.Context(), id))
			var setups []time.Duration
			for b.Loop() {
				id := "b" + randHex(b, 15)
				start := time.Now()
				if _, err := m.Setup(b.Context(), id, internet); err != nil {
					b.Fatal(err)
				}
				setups = append(setups, time.Since(start))
				must(b, m.Teardown(b.Context(), id))
			}
			reportPercentiles(b, "setup", setups)
		})
	}
}

func reportPercentiles(b *testing.B, name string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, name+"-p50-ms")
	b.ReportMetric(float64(ds[len(ds)*95/100].Microseconds())/1000, name+"-p95-ms")
}

// A new sandbox must be reachable at once even if its address's previous
// holder left a neighbour entry on the host naming its MAC (addresses are
// reused after kills, across servers and restarts).
func TestReusedAddressHasNoStaleNeighbour(t *testing.T) {
	m, _ := newTestManager(t)
	setup(t, m, true) // brings up the bridge
	// Every address of the test subnet gets a stale entry for a MAC that
	// no sandbox has, as a killed sandbox leaves behind.
	stale, _ := net.ParseMAC("02:00:5e:00:53:01")
	for a := m.ipam.gateway.Next(); m.ipam.prefix.Contains(a); a = a.Next() {
		if err := m.host.NeighSet(&netlink.Neigh{LinkIndex: m.bridgeIndex, Family: netlink.FAMILY_V4,
			State: netlink.NUD_STALE, IP: a.AsSlice(), HardwareAddr: stale}); err != nil {
			t.Fatalf("seed neighbour entry for %s: %v", a, err)
		}
	}
	id, path := setup(t, m, true)
	addr, ok := m.Address(id)
	if !ok {
		t.Fatalf("no address for sandbox %s", id)
	}
	neighs, err := m.host.NeighList(m.bridgeIndex, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if n.IP.Equal(addr.AsSlice()) && n.HardwareAddr.String() == stale.String() {
			t.Fatalf("the host still maps the new sandbox's address %s to the previous holder's MAC %s", addr, stale)
		}
	}
	ln := listen(t, path, "0.0.0.0:0")
	target := netip.AddrPortFrom(addr, uint16(ln.Addr().(*net.TCPAddr).Port)).String()
	if _, err := dial(t, "", target); err != nil {
		t.Fatalf("host cannot reach the new sandbox at %s: %v", target, err)
	}
}
