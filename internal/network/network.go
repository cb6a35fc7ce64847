// Package network gives each sandbox its own network namespace, created by
// sbx and bind-mounted at <NetnsDir>/<id> so that the OCI runtime can join
// it by path (runtime.Spec.NetNS) and a restarted server can find it again.
//
// Without internet access a namespace has loopback only. With it, a veth
// pair connects the namespace to the bridge: eth0 inside gets an address
// from the subnet and a default route via the bridge; the host masquerades
// outbound traffic. Bridge port isolation and a FORWARD rule stop sandboxes
// from reaching each other, and an INPUT rule stops them from reaching
// services on the host.
package network

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"strconv"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// Config says where namespaces live and which bridge and subnet to use.
type Config struct {
	NetnsDir string // <data-dir>/netns
	Bridge   string // "sbx0"
	Subnet   string // "10.88.0.0/16"; the first address is the bridge's
	LeaseDir string // machine-wide address leases (default DefaultLeaseDir; "-" disables)
}

// Defaults for Config fields left empty.
const (
	DefaultBridge = "sbx0"
	DefaultSubnet = "10.88.0.0/16"
	sandboxIf     = "eth0"
)

// Manager creates and removes sandbox network namespaces. It is safe for
// concurrent use.
type Manager struct {
	cfg  Config
	log  *slog.Logger
	host *netlink.Handle // netlink socket in the host namespace

	mu          sync.Mutex
	ipam        *ipam
	hostReady   bool // bridge, forwarding and firewall are in place
	bridgeIndex int
}

var idRE = regexp.MustCompile(`^[a-z0-9]{1,64}$`)

func validateID(id string) error {
	if !idRE.MatchString(id) {
		return errdefs.Invalid("invalid sandbox id %q: use 1-64 characters a-z and 0-9", id)
	}
	return nil
}

// New checks the config and reserves the addresses of namespaces left by
// an earlier process, so that a restart never hands out an address twice.
// The bridge and firewall are set up on the first Setup with internet
// access.
func New(cfg Config, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridge
	}
	if cfg.Subnet == "" {
		cfg.Subnet = DefaultSubnet
	}
	if cfg.NetnsDir == "" {
		return nil, errdefs.Invalid("network: NetnsDir must be set (e.g. /var/lib/sbx/netns)")
	}
	if len(cfg.Bridge) > 15 || !regexp.MustCompile(`^[a-zA-Z0-9_-]+$`).MatchString(cfg.Bridge) {
		return nil, errdefs.Invalid("network bridge name %q: use at most 15 letters, digits, '-' or '_'", cfg.Bridge)
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
	m := &Manager{cfg: cfg, log: log, host: h, ipam: ip}
	switch cfg.LeaseDir {
	case "":
		ip.leases = leases{dir: DefaultLeaseDir}
	case "-":
	default:
		ip.leases = leases{dir: cfg.LeaseDir}
	}
	ip.owner = m.nsPath
	if err := m.recover(); err != nil {
		h.Close()
		return nil, err
	}
	return m, nil
}

// recover reads eth0's address in every namespace under NetnsDir.
func (m *Manager) recover() error {
	ids, err := m.List()
	if err != nil {
		return err
	}
	for _, id := range ids {
		addr, err := nsAddress(m.nsPath(id))
		if err != nil {
			m.log.Warn("cannot read a sandbox namespace's address", "sandbox.id", id, "err", err)
			continue
		}
		if addr.IsValid() {
			if err := m.ipam.reserve(id, addr); err != nil {
				m.log.Warn("sandbox namespace has an address outside the subnet", "sandbox.id", id, "err", err)
			}
		}
	}
	return nil
}

// nsAddress returns the IPv4 address of eth0 in the namespace at path, or
// the zero Addr when it has none (no internet access).
func nsAddress(path string) (netip.Addr, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return netip.Addr{}, err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return netip.Addr{}, err
	}
	defer h.Close()
	link, err := h.LinkByName(sandboxIf)
	if err != nil {
		return netip.Addr{}, nil
	}
	addrs, err := h.AddrList(link, unix.AF_INET)
	if err != nil || len(addrs) == 0 {
		return netip.Addr{}, err
	}
	a, _ := netip.AddrFromSlice(addrs[0].IP.To4())
	return a, nil
}

// Close releases the netlink socket. Namespaces stay.
func (m *Manager) Close() error {
	m.host.Close()
	return nil
}

func (m *Manager) nsPath(id string) string { return filepath.Join(m.cfg.NetnsDir, id) }

// vethName is the host side of a sandbox's veth pair, derived from the ID
// so that Teardown finds it after a restart (interface names are limited
// to 15 bytes, IDs are not).
func vethName(id string) string {
	h := fnv.New64a()
	h.Write([]byte(id))
	return fmt.Sprintf("sbx%012x", h.Sum64()&0xffffffffffff)
}

// Gateway is the bridge address, the sandboxes' default route.
func (m *Manager) Gateway() netip.Addr { return m.ipam.gateway }

// Address returns the sandbox's address, if it has internet access.
func (m *Manager) Address(id string) (netip.Addr, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.ipam.byID[id]
	return a, ok
}

// Setup creates the sandbox's network namespace and returns its path.
func (m *Manager) Setup(ctx context.Context, id string, allowInternet bool) (nsPath string, err error) {
	if err := validateID(id); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	path := m.nsPath(id)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return "", errdefs.Exists("network namespace for sandbox %s already exists", id)
		}
		return "", fmt.Errorf("network setup for sandbox %s: %w", id, err)
	}
	f.Close()
	defer func() {
		if err != nil {
			if terr := m.Teardown(context.WithoutCancel(ctx), id); terr != nil {
				m.log.Warn("clean up after failed network setup", "sandbox.id", id, "err", terr)
			}
		}
	}()
	var addr netip.Addr
	if allowInternet {
		if addr, err = m.prepareInternet(ctx, id); err != nil {
			return "", fmt.Errorf("network setup for sandbox %s: %w", id, err)
		}
	}
	if err := m.inNewNS(path, func(nh *netlink.Handle, ns netns.NsHandle) error {
		return m.configure(nh, ns, id, addr)
	}); err != nil {
		if allowInternet {
			// The bridge may have been removed behind our back: check the
			// host side again on the next Setup.
			m.mu.Lock()
			m.hostReady = false
			m.mu.Unlock()
		}
		return "", fmt.Errorf("network setup for sandbox %s: %w", id, err)
	}
	return path, nil
}

// prepareInternet makes sure the host side exists and allocates an address.
func (m *Manager) prepareInternet(ctx context.Context, id string) (netip.Addr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.hostReady {
		// One netlink round trip (~30 µs) notices a bridge removed by hand.
		if br, err := m.host.LinkByName(m.cfg.Bridge); err != nil || br.Attrs().Index != m.bridgeIndex {
			m.log.Warn("network bridge disappeared; setting it up again", "bridge", m.cfg.Bridge)
			m.hostReady = false
		}
	}
	if !m.hostReady {
		if err := m.ensureHost(ctx); err != nil {
			return netip.Addr{}, err
		}
		m.hostReady = true
	}
	addr, err := m.ipam.allocate(id)
	if err != nil {
		return netip.Addr{}, err
	}
	m.forgetNeighbor(addr)
	return addr, nil
}

// forgetNeighbor drops the host's neighbour (ARP) entry for an address
// handed to a new sandbox. Addresses are reused (after a kill, by other
// servers on the bridge, after restarts), and an entry left by the
// previous holder names its MAC: the host then sends the new sandbox's
// traffic to a MAC nobody has until the entry ages out, and the first
// connections to the sandbox stall for seconds.
func (m *Manager) forgetNeighbor(addr netip.Addr) {
	err := m.host.NeighDel(&netlink.Neigh{LinkIndex: m.bridgeIndex, Family: netlink.FAMILY_V4, IP: addr.AsSlice()})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		m.log.Debug("forget neighbour entry of a reused address", "addr", addr, "err", err)
	}
}

// inNewNS creates a network namespace on a locked OS thread, pins it with a
// bind mount at path, runs fn with a netlink handle inside it, and moves
// the thread back. If the thread cannot return to the host namespace it is
// left locked, so the Go runtime discards it instead of reusing it.
func (m *Manager) inNewNS(path string, fn func(*netlink.Handle, netns.NsHandle) error) error {
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			goruntime.UnlockOSThread()
			errc <- fmt.Errorf("open current network namespace: %w", err)
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			goruntime.UnlockOSThread()
			errc <- fmt.Errorf("create network namespace: %w", err)
			return
		}
		defer ns.Close()
		err = m.pinAndConfigure(path, ns, fn)
		if serr := netns.Set(orig); serr != nil {
			errc <- errors.Join(err, fmt.Errorf("return to the host network namespace: %w", serr))
			return // thread stays locked and dies with this goroutine
		}
		goruntime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

func (m *Manager) pinAndConfigure(path string, ns netns.NsHandle, fn func(*netlink.Handle, netns.NsHandle) error) error {
	src := "/proc/self/task/" + strconv.Itoa(unix.Gettid()) + "/ns/net"
	if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount network namespace at %s: %w", path, err)
	}
	nh, err := netlink.NewHandle(unix.NETLINK_ROUTE) // created in the new namespace
	if err != nil {
		return fmt.Errorf("open netlink in the new namespace: %w", err)
	}
	defer nh.Close()
	return fn(nh, ns)
}

// configure brings up loopback and, when addr is set, the veth pair.
func (m *Manager) configure(nh *netlink.Handle, ns netns.NsHandle, id string, addr netip.Addr) error {
	lo, err := nh.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find loopback: %w", err)
	}
	if err := nh.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring up loopback: %w", err)
	}
	if !addr.IsValid() {
		return nil
	}
	name := vethName(id)
	if stale, err := m.host.LinkByName(name); err == nil {
		_ = m.host.LinkDel(stale) // left by a namespace still being destroyed
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: name, MasterIndex: m.bridgeIndex, MTU: 1500},
		PeerName:      sandboxIf,
		PeerNamespace: netlink.NsFd(int(ns)),
	}
	if err := m.host.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s: %w", name, err)
	}
	hostSide, err := m.host.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find veth %s: %w", name, err)
	}
	if err := m.host.LinkSetIsolated(hostSide, true); err != nil {
		return fmt.Errorf("isolate bridge port %s: %w", name, err)
	}
	if err := m.host.LinkSetUp(hostSide); err != nil {
		return fmt.Errorf("bring up veth %s: %w", name, err)
	}
	eth, err := nh.LinkByName(sandboxIf)
	if err != nil {
		return fmt.Errorf("find %s in the namespace: %w", sandboxIf, err)
	}
	ipnet := &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(m.ipam.prefix.Bits(), 32)}
	if err := nh.AddrAdd(eth, &netlink.Addr{IPNet: ipnet}); err != nil {
		return fmt.Errorf("set address %s: %w", ipnet, err)
	}
	if err := nh.LinkSetUp(eth); err != nil {
		return fmt.Errorf("bring up %s: %w", sandboxIf, err)
	}
	route := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: m.ipam.gateway.AsSlice()}
	if err := nh.RouteAdd(route); err != nil {
		return fmt.Errorf("add default route via %s: %w", m.ipam.gateway, err)
	}
	// Until the kernel's link watcher has seen the carrier come up, a veth
	// end has no queue and silently drops what it sends; the first packet
	// (an ARP request) is lost and retried only a second later. Wait for
	// both ends to be operational so the sandbox's first connection is fast.
	if err := waitOperUp(m.host, name); err != nil {
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
	// namespace below makes the kernel remove both ends in a batched,
	// asynchronous cleanup. A veth still present at the next Setup of the
	// same ID is deleted there.
	var errs []error
	path := m.nsPath(id)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("unmount %s: %w", path, err))
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove %s: %w", path, err))
	}
	if len(errs) > 0 {
		return fmt.Errorf("network teardown for sandbox %s: %w", id, errors.Join(errs...))
	}
	m.mu.Lock()
	m.ipam.release(id)
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

// RemoveBridge deletes the bridge and the firewall rules. Sandboxes must
// be torn down first. Used when uninstalling and by tests.
func (m *Manager) RemoveBridge(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.removeFirewall(ctx)
	m.hostReady = false
	link, err := m.host.LinkByName(m.cfg.Bridge)
	if err != nil {
		return nil
	}
	if err := m.host.LinkDel(link); err != nil {
		return fmt.Errorf("delete bridge %s: %w", m.cfg.Bridge, err)
	}
	return nil
}
