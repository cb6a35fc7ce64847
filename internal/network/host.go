package network

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/netguard"
	"github.com/sbxdev/sbx/internal/procsys"
	"github.com/sbxdev/sbx/internal/resolvconf"
)

// ensureHost turns on IPv4 forwarding and installs the firewall. It is
// idempotent: every run converges to the same state, so it is safe after a
// restart or when someone flushed the ruleset by hand. The caller holds mu.
func (m *Manager) ensureHost(ctx context.Context) error {
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0); err != nil {
		return fmt.Errorf("enable IPv4 forwarding (net.ipv4.ip_forward=1): %w", err)
	}
	if err := m.fw.checkOwner(m.nft); err != nil {
		return err
	}
	m.fw.resolvers = m.resolvers()
	if err := m.fw.install(m.nft); err != nil {
		return fmt.Errorf("%w (sandboxes with internet access need nftables in the kernel)", err)
	}
	if removed := removeStale(m.nft, m.fw.table); len(removed) > 0 {
		m.log.Info("removed sandbox firewall tables of sbx servers whose data dir is gone", "tables", removed)
	}
	m.allowForwardPastDropPolicy(ctx)
	m.startWatch()
	return nil
}

// resolvers returns the IPv4 DNS servers sandboxes are given.
func (m *Manager) resolvers() []netip.Addr {
	var all []netip.Addr
	if m.cfg.Resolvers != nil {
		all = m.cfg.Resolvers()
	} else {
		_, all = resolvconf.Load()
	}
	var v4 []netip.Addr
	for _, a := range all {
		if a.Is4() && !slices.Contains(v4, a) {
			v4 = append(v4, a)
		}
	}
	return v4
}

// watchInterval is how often the firewall is checked and the resolver list
// re-read: `nft flush ruleset` (e.g. a restart of Debian's nftables
// service) drops every table, ours included, and sandboxes that are
// running need their rules back, not only the next one created.
const watchInterval = 2 * time.Second

func (m *Manager) startWatch() {
	if m.stopWatch != nil {
		return
	}
	stop, done := make(chan struct{}), make(chan struct{})
	m.stopWatch, m.watchDone = stop, done
	go func() {
		defer close(done)
		t := time.NewTicker(watchInterval)
		defer t.Stop()
		for n := 1; ; n++ {
			select {
			case <-stop:
				return
			case <-t.C:
				m.recheck()
				if n%int(domainRefresh/watchInterval) == 0 {
					m.refreshDomains()
				}
			}
		}
	}()
}

// recheck reinstalls the table when it is gone or the resolvers changed.
func (m *Manager) recheck() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.hostReady {
		return
	}
	res := m.resolvers()
	ok, err := m.fw.exists(m.nft)
	if err != nil {
		m.log.Warn("check the sandbox firewall", "err", err)
		return
	}
	if ok && slices.Equal(res, m.fw.resolvers) {
		return
	}
	if !ok {
		m.log.Warn("the sandbox firewall table disappeared (nft flush ruleset?); installing it again", "table", m.fw.table)
	} else {
		m.log.Info("the host's DNS resolvers changed; updating the sandbox firewall", "resolvers", res)
	}
	m.fw.resolvers = res
	if err := m.fw.install(m.nft); err != nil {
		m.log.Error("reinstall the sandbox firewall", "err", err)
	}
}

// allowForwardPastDropPolicy keeps sandbox egress working on hosts whose
// iptables FORWARD policy is DROP (Docker and ufw set it): a drop in that
// chain is as final as ours. Two generic rules accept what crosses any sbx
// veth; our own table still decides. They are shared by every sbx server
// on the machine and left in place.
func (m *Manager) allowForwardPastDropPolicy(ctx context.Context) {
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		return // no iptables: no iptables policy either
	}
	out, err := exec.CommandContext(ctx, ipt, "-w", "-S", "FORWARD").Output()
	if err != nil || !bytes.Contains(out, []byte("-P FORWARD DROP")) {
		return
	}
	for _, rule := range [][]string{
		{"-i", vethPrefix + "+", "-j", "ACCEPT"},
		{"-o", vethPrefix + "+", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"},
	} {
		check := append([]string{"-w", "-C", "FORWARD"}, rule...)
		if exec.CommandContext(ctx, ipt, check...).Run() == nil {
			continue
		}
		ins := append([]string{"-w", "-I", "FORWARD", "1"}, rule...)
		if out, err := exec.CommandContext(ctx, ipt, ins...).CombinedOutput(); err != nil {
			m.log.Warn("iptables FORWARD policy is DROP and sandbox traffic could not be let through; sandboxes may have no internet",
				"cmd", "iptables "+strings.Join(ins, " "), "err", err, "out", string(bytes.TrimSpace(out)))
		}
	}
}

// allowedHostAddrs returns the host's own addresses inside allowed ranges,
// to warn the operator that sandboxes reach services listening there.
func allowedHostAddrs(allow []netip.Prefix) []netip.Addr {
	var out []netip.Addr
	for _, a := range netguard.LocalAddrs() {
		for _, p := range allow {
			if p.Contains(a) && !a.IsLoopback() {
				out = append(out, a)
				break
			}
		}
	}
	return out
}

// hostConf holds the host namespace's /proc/sys/net/ipv4/conf and
// ipv6/conf, opened once, so the host-end sysctls of each new veth are
// found from them. Looked up from /proc/sys, the ipv4 and ipv6 components
// are compared against the same-named entry of every network namespace on
// the host (proc_sys_compare, one dcache hash chain): with 250-380
// sandboxes these two writes took 8% of the server's CPU in a density run
// (pprof), 0.75 ms per create, and more with every sandbox.
type hostConf struct {
	ipv4, ipv6 confDir
}

// confDir is a directory: its fd, or AT_FDCWD when it could not be opened.
type confDir struct {
	fd   int
	path string
}

// openHostConf opens the host's conf dirs; it must run in the host's
// network namespace (New does). A dir that cannot be opened is used by
// path, as before.
func openHostConf() hostConf {
	open := func(path string) confDir {
		fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			fd = unix.AT_FDCWD
		}
		return confDir{fd: fd, path: path}
	}
	return hostConf{ipv4: open("/proc/sys/net/ipv4/conf"), ipv6: open("/proc/sys/net/ipv6/conf")}
}

// write sets the sysctl name (e.g. "eth0/arp_ignore") under the dir.
func (d confDir) write(name, value string) error {
	if d.fd == unix.AT_FDCWD {
		return writeSysctl(d.path+"/"+name, value)
	}
	return procsys.WriteAt(d.fd, name, value, d.path+"/"+name)
}

func (c hostConf) close() {
	for _, d := range []confDir{c.ipv4, c.ipv6} {
		if d.fd >= 0 {
			unix.Close(d.fd)
		}
	}
}

// Close stops watching the firewall and releases the netlink sockets.
// Namespaces and the firewall stay. Only the first call does anything (a
// second would close descriptors by numbers that may be others' by then).
func (m *Manager) Close() error {
	var err error
	m.closeOnce.Do(func() { err = m.close() })
	return err
}

func (m *Manager) close() error {
	m.mu.Lock()
	stop, done := m.stopWatch, m.watchDone
	m.stopWatch = nil
	m.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	m.pinMu.Lock()
	if m.pins != nil {
		m.pins.close()
	}
	m.pinMu.Unlock()
	m.host.Close()
	m.conf.close()
	return m.nft.CloseLasting()
}
