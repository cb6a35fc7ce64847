// Package network gives each sandbox its own network namespace, created by
// sbx and named by the file <NetnsDir>/<id>, so that a restarted server can
// find it again. It is pinned by a bind mount kept out of the host's mount
// table (pins.go); JoinPath gives the path by which the OCI runtime joins
// it (runtime.Spec.NetNS). Builds before that pinned it on the name itself,
// and those namespaces are still found there.
//
// Without internet access a namespace has loopback only. With it, the
// sandbox gets a point-to-point veth to the host and nothing else: eth0
// inside holds the sandbox's address as a /32 and routes everything via
// the gateway address, which sits on the host end; the host routes the
// sandbox's /32 to that veth. There is no shared layer 2 segment, so the
// host is every sandbox's only neighbour: a sandbox cannot see, answer for
// or claim another's traffic, and a packet it sends with any source but
// its own is dropped on entry (firewall.go). Neighbour entries are static
// on both ends and the host answers no ARP on these links, so a sandbox
// cannot fill the host's neighbour table either.
//
// The firewall (firewall.go) stops sandboxes from reaching each other, the
// host, and private or reserved ranges (netguard.Blocked) unless the
// operator opened them (Config.AllowCIDRs); DNS to the host's resolvers
// stays open; everything else is masqueraded out.
//
// Host objects are named after a tag derived from NetnsDir ("sbx-<tag>"
// for the nftables table and the prefix of every host veth), so several
// servers on one machine (tests, CI, a developer's) each own theirs, and
// none touches the bridge sbx0 and iptables chains SBX-*-SBX0 of older
// builds, whose sandboxes keep working until they are gone.
package network

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/procsys"
)

// Config says where namespaces live, which subnet to use and what sandbox
// egress may reach.
type Config struct {
	NetnsDir string // <data-dir>/netns; also names this server's host objects
	Subnet   string // "10.88.0.0/16"; the first address is the gateway
	LeaseDir string // machine-wide address leases (default DefaultLeaseDir; "-" disables)
	// AllowCIDRs are IPv4 ranges sandboxes may reach although they are
	// blocked by default (netguard.Blocked: private, reserved, ...; and
	// the host's own addresses): sbx serve --sandbox-allow-cidr. The
	// sandbox subnet and the gateway stay closed whatever is allowed.
	AllowCIDRs []netip.Prefix
	// Resolvers returns the DNS servers sandboxes are given; port 53 on
	// them stays open. nil means the host's (resolvconf.Load), which is
	// what the runtime writes into sandboxes.
	Resolvers func() []netip.Addr
}

// Defaults for Config fields left empty.
const (
	DefaultSubnet = "10.88.0.0/16"
	sandboxIf     = "eth0"
	// vethPrefix starts every host veth of this design ("sbx-<tag><addr>").
	// Older builds named theirs "sbx" + 12 hex digits and enslaved them
	// to the bridge sbx0; the dash keeps the two apart.
	vethPrefix = "sbx-"
)

// Manager creates and removes sandbox network namespaces. It is safe for
// concurrent use.
type Manager struct {
	cfg  Config
	log  *slog.Logger
	host *netlink.Handle // netlink socket in the host namespace
	nft  *nftables.Conn  // nftables socket in the host namespace
	fw   *firewall       // guarded by mu
	tag  string          // 5 hex digits derived from NetnsDir
	conf hostConf        // the host's per-interface sysctl dirs

	mu        sync.Mutex
	ipam      *ipam
	hostReady bool                // forwarding and firewall are in place
	ifaces    map[string]string   // sandbox ID → host veth, for sandboxes routed by this design
	policies  map[string]*applied // sandbox ID → egress policy (policy.go)
	lookup    func(context.Context, string) ([]netip.Addr, error)
	stopWatch chan struct{}
	watchDone chan struct{}

	pinMu    sync.Mutex
	pins     *pinNS // started by the first namespace, or by New when pinned
	hostPins bool   // the pins cannot be made or last (errPinOnHost): pin on the host

	closeOnce sync.Once // Close (host.go)
}

var idRE = regexp.MustCompile(`^[a-z0-9]{1,64}$`)

func validateID(id string) error {
	if !idRE.MatchString(id) {
		return errdefs.Invalid("invalid sandbox id %q: use 1-64 characters a-z and 0-9", id)
	}
	return nil
}

// tagFor names the host objects of the server whose namespaces live in
// dir: 20 bits, so "sbx-" + tag + 6 hex digits of an address fit the
// 15 bytes of an interface name.
func tagFor(dir string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(dir)))
	return hex.EncodeToString(sum[:3])[:5]
}

// New checks the config and reserves the addresses of namespaces left by
// an earlier process, so that a restart never hands out an address twice.
// The firewall is set up on the first Setup with internet access.
func New(cfg Config, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Subnet == "" {
		cfg.Subnet = DefaultSubnet
	}
	if cfg.NetnsDir == "" {
		return nil, errdefs.Invalid("network: NetnsDir must be set (e.g. /var/lib/sbx/netns)")
	}
	abs, err := filepath.Abs(cfg.NetnsDir)
	if err != nil {
		return nil, fmt.Errorf("network: %s: %w", cfg.NetnsDir, err)
	}
	cfg.NetnsDir = abs
	for _, p := range cfg.AllowCIDRs {
		if !p.Addr().Is4() {
			return nil, errdefs.Invalid("sandbox allow CIDR %s: sandboxes have IPv4 only; give an IPv4 range such as 10.1.0.0/16", p)
		}
	}
	ip, err := newIPAM(cfg.Subnet)
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errdefs.Precondition("network: sbx must run as root to create network namespaces")
	}
	if err := os.MkdirAll(cfg.NetnsDir, 0o755); err != nil {
		return nil, fmt.Errorf("network: create %s: %w", cfg.NetnsDir, err)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("network: open netlink: %w", err)
	}
	nft, err := nftables.New(nftables.AsLasting())
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("network: open nftables netlink: %w", err)
	}
	tag := tagFor(cfg.NetnsDir)
	m := &Manager{cfg: cfg, log: log, host: h, nft: nft, ipam: ip, tag: tag, conf: openHostConf(), ifaces: map[string]string{},
		policies: map[string]*applied{}, lookup: defaultLookup,
		fw: &firewall{table: tablePrefix + tag, ifPrefix: vethPrefix + tag, subnet: ip.prefix,
			gateway: ip.gateway, allow: cfg.AllowCIDRs, owner: cfg.NetnsDir}}
	m.fw.policies, m.fw.ifaces = m.policies, m.ifaces
	switch cfg.LeaseDir {
	case "":
		ip.leases = leases{dir: DefaultLeaseDir}
	case "-":
	default:
		ip.leases = leases{dir: cfg.LeaseDir}
	}
	ip.owner = m.nsPath
	if pinnedMountNS(m.pinFile()) {
		if m.pins, err = startPins(m.pinFile()); err != nil {
			m.Close()
			return nil, fmt.Errorf("network: %w", err)
		}
	}
	if hostAddrs := allowedHostAddrs(cfg.AllowCIDRs); len(hostAddrs) > 0 {
		log.Warn("allowed sandbox ranges include this host's own addresses: sandboxes reach services listening there",
			"addrs", hostAddrs)
	}
	if err := m.recover(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// recover finds the address (and, for sandboxes routed by this manager,
// the host veth) of every namespace under NetnsDir.
func (m *Manager) recover() error {
	ids, err := m.List()
	if err != nil {
		return err
	}
	if err := m.dropOrphanPins(ids); err != nil {
		m.log.Warn("cannot remove pins of network namespaces without a name", "err", err)
	}
	for _, id := range ids {
		path, err := m.JoinPath(id)
		if err != nil {
			m.log.Warn("a sandbox namespace is gone", "sandbox.id", id, "err", err)
			continue
		}
		addr, hostIf, err := m.nsState(path)
		if err != nil {
			m.log.Warn("cannot read a sandbox namespace's address", "sandbox.id", id, "err", err)
			continue
		}
		if !addr.IsValid() {
			continue
		}
		if err := m.ipam.reserve(id, addr); err != nil {
			m.log.Warn("sandbox namespace has an address outside the subnet", "sandbox.id", id, "err", err)
			continue
		}
		if hostIf != "" {
			m.ifaces[id] = hostIf
		} else {
			// Bridged by an older build: its traffic is not sealed, so
			// the proxy must not send anything over it (see DirectPath).
			m.log.Info("sandbox on the old shared bridge: reached through its agent only until it ends", "sandbox.id", id)
		}
	}
	m.loadPolicies(ids)
	return nil
}

// nsState returns the address of the sandbox in the namespace at path
// (zero without internet access) and its host veth when this manager's
// design routes it. The host end is read first: gVisor moves the address
// off eth0 into its own network stack.
func (m *Manager) nsState(path string) (netip.Addr, string, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return netip.Addr{}, "", err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return netip.Addr{}, "", err
	}
	defer h.Close()
	link, err := h.LinkByName(sandboxIf)
	if err != nil {
		return netip.Addr{}, "", nil
	}
	if peer, err := m.host.LinkByIndex(link.Attrs().ParentIndex); err == nil &&
		strings.HasPrefix(peer.Attrs().Name, m.fw.ifPrefix) {
		addrs, err := m.host.AddrList(peer, unix.AF_INET)
		if err != nil {
			return netip.Addr{}, "", err
		}
		for _, a := range addrs {
			if a.Peer != nil {
				ip, _ := netip.AddrFromSlice(a.Peer.IP.To4())
				return ip, peer.Attrs().Name, nil
			}
		}
	}
	addrs, err := h.AddrList(link, unix.AF_INET)
	if err != nil || len(addrs) == 0 {
		return netip.Addr{}, "", err
	}
	a, _ := netip.AddrFromSlice(addrs[0].IP.To4())
	return a, "", nil
}

// nsPath names the namespace of id (the lease owner; see JoinPath).
func (m *Manager) nsPath(id string) string { return filepath.Join(m.cfg.NetnsDir, id) }

// vethName is the host end of the veth of the sandbox holding addr. Being
// derived from the address (unique on the machine, see lease.go) rather
// than the ID, two live sandboxes can never get the same name.
func (m *Manager) vethName(addr netip.Addr) string {
	a := addr.As4()
	return fmt.Sprintf("%s%02x%02x%02x", m.fw.ifPrefix, a[1], a[2], a[3])
}

// Gateway is the sandboxes' default route: the host end of every veth.
func (m *Manager) Gateway() netip.Addr { return m.ipam.gateway }

// Address returns the sandbox's address, if it has internet access.
func (m *Manager) Address(id string) (netip.Addr, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.ipam.byID[id]
	return a, ok
}

// DirectPath returns the sandbox's address and the host interface that
// leads to it and to nothing else, so the host can talk to the sandbox in
// plaintext: nobody but the sandbox is on that link. Connections must be
// bound to the interface (SO_BINDTODEVICE), not left to routing, which
// could send a packet elsewhere (e.g. onto an older build's bridge) when
// the sandbox is gone. Sandboxes without internet access, and those an
// older build left on its shared bridge, have none.
func (m *Manager) DirectPath(id string) (netip.Addr, string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.ipam.byID[id]
	ifname, routed := m.ifaces[id]
	return a, ifname, ok && routed
}

// Setup creates the sandbox's network namespace and returns its path.
func (m *Manager) Setup(ctx context.Context, id string, allowInternet bool) (nsPath string, err error) {
	path, attach, err := m.Begin(ctx, id, allowInternet)
	if err != nil {
		return "", err
	}
	if err := attach(ctx); err != nil {
		if terr := m.Teardown(context.WithoutCancel(ctx), id); terr != nil {
			m.log.Warn("clean up after failed network setup", "sandbox.id", id, "err", terr)
		}
		return "", err
	}
	return path, nil
}

// Begin creates the sandbox's network namespace (sysctls set, loopback up,
// an address allocated when it may reach the internet) and returns its path
// and attach, which plugs the veth pair in: the sandbox's end configured
// inside, the host's end up and operational. The namespace is usable (by
// path) at once, so a caller runs attach while the runtime starts the
// sandbox in it, and must call it exactly once (it releases what Begin
// holds) and wait for it before handing the sandbox out. This is the order
// a CNI plugin has too: until attach ends the namespace has no link to
// anything, and nothing inside can configure one (the sandbox's root holds
// no capability over a namespace the host made), so no traffic passes
// before every host-side rule applies. A failed attach leaves the
// namespace to the caller's Teardown.
func (m *Manager) Begin(ctx context.Context, id string, allowInternet bool) (nsPath string, attach func(context.Context) error, err error) {
	if err := validateID(id); err != nil {
		return "", nil, err
	}
	if err := ctx.Err(); err != nil {
		return "", nil, err
	}
	path := m.nsPath(id)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return "", nil, errdefs.Exists("network namespace for sandbox %s already exists", id)
		}
		return "", nil, fmt.Errorf("network setup for sandbox %s: %w", id, err)
	}
	f.Close()
	defer func() {
		if err != nil {
			if terr := m.Teardown(context.WithoutCancel(ctx), id); terr != nil {
				m.log.Warn("clean up after failed network setup", "sandbox.id", id, "err", terr)
			}
		}
	}()
	var v *veth
	if allowInternet {
		addr, err := m.prepareInternet(ctx, id)
		if err != nil {
			return "", nil, fmt.Errorf("network setup for sandbox %s: %w", id, err)
		}
		if v, err = m.newVeth(addr); err != nil {
			return "", nil, fmt.Errorf("network setup for sandbox %s: %w", id, err)
		}
	}
	pin, path, err := m.pinFor(id)
	if err != nil {
		return "", nil, fmt.Errorf("network setup for sandbox %s: %w", id, err)
	}
	nh, err := m.inNewNS(pin, func(nh *netlink.Handle, _ netns.NsHandle) error {
		return m.configure(nh)
	})
	if err != nil {
		return "", nil, fmt.Errorf("network setup for sandbox %s: %w", id, err)
	}

	if v == nil {
		nh.Close()
		return path, func(context.Context) error { return nil }, nil
	}
	return path, func(ctx context.Context) error {
		defer nh.Close()
		err := m.plug(nh, path, v)
		if err == nil {
			err = m.finishHostSide(nh, v)
		}
		if err != nil {
			// The firewall may have been removed behind our back: check
			// the host side again on the next Setup.
			m.mu.Lock()
			m.hostReady = false
			m.mu.Unlock()
			return fmt.Errorf("network setup for sandbox %s: %w", id, err)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		m.ifaces[id] = v.name
		if _, ok := m.policies[id]; ok {
			// A policy recorded while the sandbox had no veth (set while
			// it was paused without its memory) has no chain yet: the
			// table is written with the chains of sandboxes with a veth.
			if err := m.reinstallLocked(); err != nil {
				return fmt.Errorf("network setup for sandbox %s: %w", id, err)
			}
		}
		return nil
	}, nil
}

// prepareInternet makes sure the host side exists and allocates an address.
func (m *Manager) prepareInternet(ctx context.Context, id string) (netip.Addr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.hostReady {
		// One netlink round trip notices a table removed by hand before
		// a sandbox starts without it (the watcher catches it for the
		// running ones).
		if ok, err := m.fw.exists(m.nft); err != nil || !ok {
			m.log.Warn("the sandbox firewall table is missing; installing it again", "table", m.fw.table, "err", err)
			m.hostReady = false
		}
	}
	if !m.hostReady {
		if err := m.ensureHost(ctx); err != nil {
			return netip.Addr{}, err
		}
		m.hostReady = true
	}
	return m.ipam.allocate(id)
}

// veth is one sandbox's link to the host.
type veth struct {
	name       string // host end
	addr       netip.Addr
	hostMAC    net.HardwareAddr
	sandboxMAC net.HardwareAddr
	hostIndex  int
}

func (m *Manager) newVeth(addr netip.Addr) (*veth, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	for _, i := range []int{0, 6} {
		b[i] = b[i]&0xfe | 0x02 // unicast, locally administered
	}
	return &veth{name: m.vethName(addr), addr: addr, hostMAC: b[:6], sandboxMAC: b[6:]}, nil
}

// inNewNS creates a network namespace on a locked OS thread, runs fn with a
// netlink handle inside it, moves the thread back, and pins the namespace
// (pin holds it once its descriptor is closed). It returns that handle (the
// caller closes it), which keeps working in the namespace from any thread.
// If the thread cannot
// return to the host namespace it is left locked, so the Go runtime
// discards it instead of reusing it.
func (m *Manager) inNewNS(pin func(netns.NsHandle) error, fn func(*netlink.Handle, netns.NsHandle) error) (*netlink.Handle, error) {
	type result struct {
		nh  *netlink.Handle
		err error
	}
	resc := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			goruntime.UnlockOSThread()
			resc <- result{err: fmt.Errorf("open current network namespace: %w", err)}
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			goruntime.UnlockOSThread()
			resc <- result{err: fmt.Errorf("create network namespace: %w", err)}
			return
		}
		defer ns.Close()
		nh, err := m.configureNew(ns, fn)
		if serr := netns.Set(orig); serr != nil {
			if nh != nil {
				nh.Close()
			}
			resc <- result{err: errors.Join(err, fmt.Errorf("return to the host network namespace: %w", serr))}
			return // thread stays locked and dies with this goroutine
		}
		goruntime.UnlockOSThread()
		// Pinned off the locked thread: pins.go's hands it to another
		// thread, and a locked thread waiting costs two more wake-ups.
		if err == nil {
			if err = pin(ns); err != nil {
				nh.Close()
				nh = nil
			}
		}
		resc <- result{nh, err}
	}()
	r := <-resc
	return r.nh, r.err
}

func (m *Manager) configureNew(ns netns.NsHandle, fn func(*netlink.Handle, netns.NsHandle) error) (*netlink.Handle, error) {
	nh, err := netlink.NewHandle(unix.NETLINK_ROUTE) // created in the new namespace
	if err != nil {
		return nil, fmt.Errorf("open netlink in the new namespace: %w", err)
	}
	if err := fn(nh, ns); err != nil {
		nh.Close()
		return nil, err
	}
	return nh, nil
}

// sandboxSysctls are set in every sandbox namespace. The runtime drops
// CAP_NET_RAW and maps sandbox root to an unprivileged user, who does not
// own this namespace: ping then needs ICMP datagram sockets for every
// group, and servers need ports below 1024 without a capability. New
// interfaces (eth0) get no IPv6: sandboxes have IPv4 only, and loopback
// keeps ::1.
// Paths are relative to a procfs root (procsys).
var sandboxSysctls = []struct{ path, value string }{
	{"sys/net/ipv4/ping_group_range", "0 2147483647"},
	{"sys/net/ipv4/ip_unprivileged_port_start", "0"},
	{"sys/net/ipv6/conf/default/disable_ipv6", "1"},
}

// configure runs on a thread inside the new namespace: sysctls (before any
// interface but loopback exists: eth0 is made without IPv6) and loopback.
// The sysctls go through a procfs of their own (procsys: through the
// host's /proc, each new namespace's first lookup costs more with every
// sandbox running).
func (m *Manager) configure(nh *netlink.Handle) error {
	root, err := procsys.Open()
	if err != nil {
		return fmt.Errorf("in the sandbox namespace: %w", err)
	}
	defer root.Close()
	for _, s := range sandboxSysctls {
		// /proc/sys/net belongs to the namespace of the calling thread.
		if err := root.Write(s.path, s.value); err != nil {
			return fmt.Errorf("in the sandbox namespace: %w", err)
		}
	}
	lo, err := nh.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find loopback: %w", err)
	}
	if err := nh.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring up loopback: %w", err)
	}
	return nil
}

// plug creates the veth pair into the namespace at path and configures the
// sandbox's end through nh, a netlink handle inside it (usable from any
// thread).
func (m *Manager) plug(nh *netlink.Handle, path string, v *veth) error {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer ns.Close()
	link := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: v.name, MTU: 1500, HardwareAddr: v.hostMAC},
		PeerName:         sandboxIf,
		PeerHardwareAddr: v.sandboxMAC,
		PeerNamespace:    netlink.NsFd(int(ns)),
	}
	if err := m.addHostVeth(link, v); err != nil {
		return err
	}
	gw := m.ipam.gateway
	eth, err := nh.LinkByName(sandboxIf)
	if err != nil {
		return fmt.Errorf("find %s in the namespace: %w", sandboxIf, err)
	}
	ethIdx := eth.Attrs().Index
	if err := nh.AddrAdd(eth, &netlink.Addr{IPNet: hostNet(v.addr)}); err != nil {
		return fmt.Errorf("set address %s: %w", v.addr, err)
	}
	if err := nh.LinkSetUp(eth); err != nil {
		return fmt.Errorf("bring up %s: %w", sandboxIf, err)
	}
	// The gateway is on-link through eth0; everything else goes to it.
	if err := nh.RouteAdd(&netlink.Route{LinkIndex: ethIdx, Dst: hostNet(gw), Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("add route to the gateway %s: %w", gw, err)
	}
	if err := nh.RouteAdd(&netlink.Route{LinkIndex: ethIdx, Gw: gw.AsSlice()}); err != nil {
		return fmt.Errorf("add default route via %s: %w", gw, err)
	}
	// Static neighbours on both ends: the host answers no ARP on sandbox
	// links (arp_ignore, finishHostSide), so it learns nothing a sandbox
	// says there. gVisor copies permanent entries into its own stack.
	if err := nh.NeighAdd(&netlink.Neigh{LinkIndex: ethIdx, Family: netlink.FAMILY_V4,
		State: netlink.NUD_PERMANENT, IP: gw.AsSlice(), HardwareAddr: v.hostMAC}); err != nil {
		return fmt.Errorf("add neighbour entry for the gateway: %w", err)
	}
	// The host end: the gateway address with the sandbox as its peer,
	// which also routes the sandbox's /32 to this veth.
	if err := m.host.AddrAdd(link, &netlink.Addr{IPNet: hostNet(gw), Peer: hostNet(v.addr)}); err != nil {
		return fmt.Errorf("set address %s peer %s on %s: %w", gw, v.addr, v.name, err)
	}
	if err := m.host.NeighAdd(&netlink.Neigh{LinkIndex: v.hostIndex, Family: netlink.FAMILY_V4,
		State: netlink.NUD_PERMANENT, IP: v.addr.AsSlice(), HardwareAddr: v.sandboxMAC}); err != nil {
		return fmt.Errorf("add neighbour entry for %s: %w", v.addr, err)
	}
	return nil
}

// writeSysctl writes a /proc/sys file (procsys.WriteAt).
func writeSysctl(path, value string) error {
	return procsys.WriteAt(unix.AT_FDCWD, path, value, path)
}

func hostNet(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}
}

// finishHostSide runs in the host namespace (its /proc/sys/net is the
// host's): the host end up, with no IPv6 and no ARP answers. The sysctls
// are written before the link comes up: the sandbox may already run
// (Begin), so the host end must never hold a link-local address.
func (m *Manager) finishHostSide(nh *netlink.Handle, v *veth) error {
	for _, s := range []struct {
		dir         confDir
		name, value string
	}{
		// No IPv6 at all on the host end: nothing reaches host services
		// over IPv6 even while the firewall table is missing.
		{m.conf.ipv6, v.name + "/disable_ipv6", "1"},
		// 8: answer no ARP request on this link (the sandbox has a static
		// entry for the gateway), so the host creates no neighbour entry
		// from what a sandbox sends.
		{m.conf.ipv4, v.name + "/arp_ignore", "8"},
	} {
		if err := s.dir.write(s.name, s.value); err != nil {
			return err
		}
	}
	if err := m.host.LinkSetUp(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: v.name, Index: v.hostIndex}}); err != nil {
		return fmt.Errorf("bring up veth %s: %w", v.name, err)
	}
	// Until the kernel's link watcher has seen the carrier come up, a veth
	// end has no queue and silently drops what it sends; the first packet
	// is lost and retried only a second later. Wait for both ends to be
	// operational so the sandbox's first connection is fast.
	if err := waitOperUp(m.host, v.name); err != nil {
		return err
	}
	return waitOperUp(nh, sandboxIf)
}

// waitOperUp polls the link's operational state; it normally turns up
// within a few hundred microseconds of the carrier.
func waitOperUp(h *netlink.Handle, name string) error {
	deadline := time.Now().Add(3 * time.Second)
	for pause := 20 * time.Microsecond; ; pause = min(2*pause, 5*time.Millisecond) {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s: %w", name, err)
		}
		if l.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("link %s is still %s after 3s", name, l.Attrs().OperState)
		}
		time.Sleep(pause)
	}
}

// Teardown removes the sandbox's veth pair and namespace. Removing what
// does not exist is not an error, so it can be repeated after a crash.
func (m *Manager) Teardown(ctx context.Context, id string) error {
	if err := validateID(id); err != nil {
		return err
	}
	// The veth pair is not deleted here: deleting it synchronously costs
	// ~30 ms (an RCU grace period per device), while destroying the
	// namespace below makes the kernel remove both ends (and the routes
	// and neighbour entries on them) in a batched, asynchronous cleanup.
	// A veth still present when its address is handed out again is
	// deleted by that Setup.
	var errs []error
	path := m.nsPath(id)
	// Pinned on its name (older builds; errPinOnHost).
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("unmount %s: %w", path, err))
	}
	m.pinMu.Lock()
	pins := m.pins
	m.pinMu.Unlock()
	if pins != nil {
		if err := pins.unpin(id); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove %s: %w", path, err))
	}
	if len(errs) > 0 {
		return fmt.Errorf("network teardown for sandbox %s: %w", id, errors.Join(errs...))
	}
	m.mu.Lock()
	m.ipam.release(id)
	delete(m.ifaces, id)
	m.dropPolicyLocked(id)
	m.mu.Unlock()
	return nil
}

// List returns the IDs of every namespace under NetnsDir, including those
// created by an earlier process of the server.
func (m *Manager) List() ([]string, error) {
	entries, err := os.ReadDir(m.cfg.NetnsDir)
	if err != nil {
		return nil, fmt.Errorf("list network namespaces: %w", err)
	}
	ids := []string{}
	for _, e := range entries {
		if e.Type().IsRegular() && validateID(e.Name()) == nil {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

// Uninstall removes this manager's firewall table and stops watching it.
// Sandboxes must be torn down first. Used when uninstalling and by tests.
// It leaves what is shared with other servers: forwarding, leases, and
// the iptables rules for hosts whose FORWARD policy is DROP.
func (m *Manager) Uninstall(ctx context.Context) error {
	m.mu.Lock()
	stop, done := m.stopWatch, m.watchDone
	m.stopWatch = nil
	m.hostReady = false
	m.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	m.mu.Lock()
	err := m.fw.remove(m.nft)
	m.mu.Unlock()
	return errors.Join(err, m.removePins())
}
