package network

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/testenv"
)

// requireRoot skips without root, or fails when SBX_REQUIRE_INTEGRATION=1.
func requireRoot(t testing.TB) {
	t.Helper()
	testenv.Require(t, testenv.Root) // to create network namespaces
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

// testConfig is a config of the tests' own: a temporary namespace dir (so
// its own firewall table and veth names), a random /24, and the tests'
// stand-in for the internet allowed (newOutside).
func testConfig(t testing.TB) Config {
	return Config{
		NetnsDir:   t.TempDir(),
		Subnet:     fmt.Sprintf("10.%d.%d.0/24", 200+randByte(t)%50, randByte(t)),
		AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")},
		Resolvers:  func() []netip.Addr { return nil },
	}
}

// newTestManager uses its own namespace directory (hence its own firewall
// table and veth names) and subnet, and removes all of it at the end, so
// tests neither see nor disturb a running sbx. Its sandboxes may reach
// the benchmarking range 198.18.0.0/15, where the tests' stand-in for the
// internet lives (newOutside): blocked by default like every reserved
// range, so this is also how --sandbox-allow-cidr is used.
func newTestManager(t testing.TB, opts ...func(*Config)) (*Manager, Config) {
	t.Helper()
	requireRoot(t)
	cfg := testConfig(t)
	for _, o := range opts {
		o(&cfg)
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
		if err := m.Uninstall(context.Background()); err != nil {
			t.Errorf("Uninstall: %v", err)
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
			// Other tests' and servers' networks come and go meanwhile.
			t.Logf("skipping %s, gone from the host: %v", target, err)
			continue
		}
		if got, err := dial(t, path, target); err == nil {
			t.Errorf("sandbox reached a host service at %s (seen as %s)", target, got)
		}
	}
}

// rules returns the manager's whole nftables table, rule by rule.
func rules(t testing.TB, m *Manager) string {
	t.Helper()
	tbl := m.fw.tableRef()
	chains, err := m.nft.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range chains {
		if c.Table.Name != tbl.Name {
			continue
		}
		rs, err := m.nft.GetRules(tbl, c)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			b, _ := json.Marshal(r.Exprs)
			out = append(out, c.Name+" "+string(b)+" "+string(r.UserData))
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

func TestFirewallConvergesAndComesBack(t *testing.T) {
	m, cfg := newTestManager(t)
	id, path := setup(t, m, true)
	before := rules(t, m)
	if strings.Count(before, "\n") < 20 || !strings.Contains(before, cfg.NetnsDir) {
		t.Fatalf("table %s looks incomplete:\n%s", m.fw.table, before)
	}
	// A restarted server converges to the same table.
	m2, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	setup(t, m2, true)
	if after := rules(t, m2); after != before {
		t.Errorf("table changed after a restart:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// Removed by hand (nft flush ruleset), it is back for running
	// sandboxes within the watch interval, and at once for a new one.
	must(t, m.fw.remove(m.nft))
	deadline := time.Now().Add(3 * watchInterval)
	for {
		if ok, _ := m.fw.exists(m.nft); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("table %s not reinstalled within %v", m.fw.table, 3*watchInterval)
		}
		time.Sleep(50 * time.Millisecond)
	}
	must(t, m.fw.remove(m.nft))
	setup(t, m2, true)
	if ok, _ := m.fw.exists(m.nft); !ok {
		t.Errorf("Setup did not reinstall the missing table %s", m.fw.table)
	}
	if _, err := dial(t, path, net.JoinHostPort(m.Gateway().String(), "22")); err == nil {
		t.Errorf("sandbox %s reached the gateway after the table came back", id)
	}
}

// A server's table names its data dir: a later server removes the tables
// of servers whose data dir is gone and leaves the others alone.
func TestStaleTablesOfRemovedServersAreRemoved(t *testing.T) {
	m, _ := newTestManager(t)
	gone, _ := newTestManager(t, func(c *Config) { c.NetnsDir = filepath.Join(t.TempDir(), "gone") })
	alive, _ := newTestManager(t)
	goneID, _ := setup(t, gone, true)
	setup(t, alive, true)
	must(t, gone.Teardown(t.Context(), goneID))
	must(t, os.RemoveAll(gone.cfg.NetnsDir))
	setup(t, m, true)
	if ok, _ := gone.fw.exists(m.nft); ok {
		t.Errorf("table %s of a server whose data dir is gone was kept", gone.fw.table)
	}
	if ok, _ := alive.fw.exists(m.nft); !ok {
		t.Errorf("table %s of a live server was removed", alive.fw.table)
	}
}

func TestTeardownIsIdempotent(t *testing.T) {
	m, _ := newTestManager(t)
	id, path := setup(t, m, true)
	addr, _ := m.Address(id)
	veth := m.vethName(addr)
	if _, err := netlink.LinkByName(veth); err != nil {
		t.Fatalf("host veth %s of sandbox %s: %v", veth, id, err)
	}
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
		if _, err := netlink.LinkByName(veth); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("veth %s still exists after the namespace was removed", veth)
		}
		time.Sleep(time.Millisecond)
	}
	if _, ok := m.Address(id); ok {
		t.Errorf("address %s still allocated", addr)
	}
	if _, _, ok := m.DirectPath(id); ok {
		t.Errorf("DirectPath still has %s", id)
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
	if got := links(t, joinPath(t, m, id)); !slices.Equal(got, []string{"lo"}) {
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
		{NetnsDir: t.TempDir(), AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("fd00::/8")}},
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
			// The first internet Setup installs the firewall.
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

// A new sandbox must be reachable at once even when its address was just
// released by another sandbox whose veth the kernel may still be
// removing: addresses are reused after kills, by other servers and after
// restarts (a /29 has five, so they come round quickly here).
func TestReusedAddressIsReachableAtOnce(t *testing.T) {
	m, _ := newTestManager(t, func(c *Config) {
		c.Subnet = fmt.Sprintf("10.%d.%d.%d/29", 200+randByte(t)%50, randByte(t), randByte(t)&0xf8)
	})
	seen := map[netip.Addr]int{}
	for i := range 12 {
		id, path := setup(t, m, true)
		addr, ok := m.Address(id)
		if !ok {
			t.Fatalf("no address for sandbox %s", id)
		}
		seen[addr]++
		ln := listen(t, path, "0.0.0.0:0")
		target := netip.AddrPortFrom(addr, uint16(ln.Addr().(*net.TCPAddr).Port)).String()
		if _, err := dial(t, "", target); err != nil {
			t.Fatalf("round %d: host cannot reach the new sandbox at %s at once: %v\n%s", i, target, err, netDebug(path))
		}
		ln.Close()
		must(t, m.Teardown(t.Context(), id))
	}
	if len(seen) >= 12 {
		t.Fatalf("no address was reused: %v", seen)
	}
}

// joinPath is m.JoinPath(id), failing the test when the namespace is gone.
func joinPath(t testing.TB, m *Manager, id string) string {
	t.Helper()
	p, err := m.JoinPath(id)
	if err != nil {
		t.Fatalf("JoinPath(%s): %v", id, err)
	}
	return p
}
