package network

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ensureHost creates the bridge with the gateway address, turns on IPv4
// forwarding and installs the firewall rules. It is idempotent: every run
// converges to the same state, so it is safe after a restart or when
// someone flushed the rules by hand.
func (m *Manager) ensureHost(ctx context.Context) error {
	br, err := m.ensureBridge()
	if err != nil {
		return err
	}
	m.bridgeIndex = br.Attrs().Index
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0); err != nil {
		return fmt.Errorf("enable IPv4 forwarding (net.ipv4.ip_forward=1): %w", err)
	}
	return m.ensureFirewall(ctx)
}

func (m *Manager) ensureBridge() (netlink.Link, error) {
	name := m.cfg.Bridge
	br, err := m.host.LinkByName(name)
	if err != nil {
		if !errors.As(err, new(netlink.LinkNotFoundError)) {
			return nil, fmt.Errorf("look up bridge %s: %w", name, err)
		}
		if err := m.host.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		if br, err = m.host.LinkByName(name); err != nil {
			return nil, fmt.Errorf("look up bridge %s: %w", name, err)
		}
	}
	if br.Type() != "bridge" {
		return nil, fmt.Errorf("network interface %s exists but is a %s, not a bridge: pick another bridge name", name, br.Type())
	}
	// No IPv6 on the bridge: a link-local address there would let sandboxes
	// reach host services over IPv6, past the IPv4 INPUT rule below.
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0)
	gw := &netlink.Addr{IPNet: &net.IPNet{
		IP: m.ipam.gateway.AsSlice(), Mask: net.CIDRMask(m.ipam.prefix.Bits(), 32),
	}}
	if err := m.host.AddrReplace(br, gw); err != nil {
		return nil, fmt.Errorf("set address %s on bridge %s: %w", gw.IPNet, name, err)
	}
	if err := m.host.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("bring up bridge %s: %w", name, err)
	}
	return br, nil
}

// chains returns our three chains (one per hook) named after the bridge,
// so that managers with different bridges (tests, several data dirs) do
// not fight over the same rules.
func (m *Manager) chains() (input, forward, nat string) {
	b := strings.ToUpper(m.cfg.Bridge)
	return "SBX-IN-" + b, "SBX-FWD-" + b, "SBX-NAT-" + b
}

// ensureFirewall (re)writes our chains and hooks them in:
//
//	INPUT  -i br             → SBX-IN:  established ACCEPT, else DROP (no host services)
//	FORWARD -i br / -o br    → SBX-FWD: sandbox↔sandbox DROP, link-local DROP,
//	                                    outbound ACCEPT, replies ACCEPT
//	nat POSTROUTING          → SBX-NAT: -s subnet ! -o br MASQUERADE
//
// The chains are replaced with one iptables-restore transaction, so a
// restarted server never opens a window in which the rules are flushed.
func (m *Manager) ensureFirewall(ctx context.Context) error {
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		return errors.New("iptables not found: install it (apt-get install -y iptables); sandboxes with internet access need NAT")
	}
	restore, err := exec.LookPath("iptables-restore")
	if err != nil {
		return errors.New("iptables-restore not found: install iptables (apt-get install -y iptables)")
	}
	cmd := exec.CommandContext(ctx, restore, "-w", "--noflush")
	cmd.Stdin = strings.NewReader(m.firewallRules())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("iptables-restore: %w: %s", err, bytes.TrimSpace(out))
	}
	in, fwd, nat := m.chains()
	br := m.cfg.Bridge
	hooks := [][]string{
		{"INPUT", "-i", br, "-j", in},
		{"FORWARD", "-i", br, "-j", fwd},
		{"FORWARD", "-o", br, "-j", fwd},
	}
	for _, h := range hooks {
		if err := ensureJump(ctx, ipt, "filter", h); err != nil {
			return err
		}
	}
	return ensureJump(ctx, ipt, "nat", []string{"POSTROUTING", "-j", nat})
}

// firewallRules is the iptables-restore input for our chains. With
// --noflush, a ":CHAIN" line creates the chain or empties it, in the same
// transaction that fills it again.
func (m *Manager) firewallRules() string {
	in, fwd, nat := m.chains()
	br, subnet := m.cfg.Bridge, m.ipam.prefix.String()
	return strings.Join([]string{
		"*filter",
		":" + in + " - [0:0]",
		":" + fwd + " - [0:0]",
		"-A " + in + " -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
		"-A " + in + " -j DROP",
		"-A " + fwd + " -i " + br + " -o " + br + " -j DROP",
		"-A " + fwd + " -i " + br + " -d 169.254.0.0/16 -j DROP",
		"-A " + fwd + " -i " + br + " -j ACCEPT",
		"-A " + fwd + " -o " + br + " -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
		"-A " + fwd + " -o " + br + " -j DROP",
		"COMMIT",
		"*nat",
		":" + nat + " - [0:0]",
		"-A " + nat + " -s " + subnet + " ! -o " + br + " -j MASQUERADE",
		"COMMIT",
		"",
	}, "\n")
}

// ensureJump inserts a jump at the top of a built-in chain unless present.
func ensureJump(ctx context.Context, ipt, table string, rule []string) error {
	check := append([]string{"-w", "-t", table, "-C"}, rule...)
	if exec.CommandContext(ctx, ipt, check...).Run() == nil {
		return nil
	}
	ins := append([]string{"-w", "-t", table, "-I", rule[0], "1"}, rule[1:]...)
	if out, err := exec.CommandContext(ctx, ipt, ins...).CombinedOutput(); err != nil {
		return fmt.Errorf("iptables %s: %w: %s", strings.Join(ins, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// removeFirewall deletes our hooks and chains (used by tests and by
// Manager.Close when asked to clean the host).
func (m *Manager) removeFirewall(ctx context.Context) {
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		return
	}
	in, fwd, nat := m.chains()
	br := m.cfg.Bridge
	run := func(args ...string) { _ = exec.CommandContext(ctx, ipt, append([]string{"-w"}, args...)...).Run() }
	run("-D", "INPUT", "-i", br, "-j", in)
	run("-D", "FORWARD", "-i", br, "-j", fwd)
	run("-D", "FORWARD", "-o", br, "-j", fwd)
	run("-t", "nat", "-D", "POSTROUTING", "-j", nat)
	for _, c := range []string{in, fwd} {
		run("-F", c)
		run("-X", c)
	}
	run("-t", "nat", "-F", nat)
	run("-t", "nat", "-X", nat)
}
