// Package resolvconf decides which DNS resolvers sandboxes use: the runtime
// writes the resolv.conf it returns into each sandbox, and the sandbox
// firewall (internal/network) opens port 53 to exactly the servers it
// names, so both must come from here.
package resolvconf

import (
	"bufio"
	"bytes"
	"net/netip"
	"os"
	"strings"
)

// Host is the host's resolver configuration. Upstream is where
// systemd-resolved lists the servers behind its stub resolver on
// 127.0.0.53, which a sandbox cannot reach from its own network namespace.
var (
	Host     = "/etc/resolv.conf"
	Upstream = "/run/systemd/resolve/resolv.conf"
)

// Load returns the resolv.conf to give sandboxes and the nameservers it
// names: the host's without loopback servers, or, when only loopback
// servers are left (a local stub resolver), systemd-resolved's list of
// upstream servers. It returns nil when neither names a server a sandbox
// can reach; sandboxes then keep their template's own resolv.conf.
func Load() (conf []byte, servers []netip.Addr) {
	for _, p := range []string{Host, Upstream} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if conf := ForSandbox(b); conf != nil {
			return conf, Servers(conf)
		}
	}
	return nil, nil
}

// ForSandbox returns hostConf without its loopback nameservers (a stub
// resolver on the host's 127.0.0.53 is not reachable from a sandbox), or
// nil if no nameserver is left.
func ForSandbox(hostConf []byte) []byte {
	var out bytes.Buffer
	servers := 0
	sc := bufio.NewScanner(bytes.NewReader(hostConf))
	for sc.Scan() {
		line := sc.Text()
		if addr, ok := nameserver(line); ok {
			if !addr.IsValid() || addr.IsLoopback() {
				continue
			}
			servers++
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	if servers == 0 {
		return nil
	}
	return out.Bytes()
}

// Servers returns the nameservers conf names, in order, without repeats.
func Servers(conf []byte) []netip.Addr {
	var out []netip.Addr
	sc := bufio.NewScanner(bytes.NewReader(conf))
	for sc.Scan() {
		if addr, ok := nameserver(sc.Text()); ok && addr.IsValid() && !containsAddr(out, addr) {
			out = append(out, addr)
		}
	}
	return out
}

// nameserver parses a "nameserver ADDR" line; ok is false for other lines,
// and the address is invalid if it does not parse (glibc ignores those).
func nameserver(line string) (addr netip.Addr, ok bool) {
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "nameserver" {
		return netip.Addr{}, false
	}
	// A zone ("fe80::1%eth0") names an interface of the host: useless inside.
	a, err := netip.ParseAddr(f[1])
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, true
	}
	return a.Unmap(), true
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}
