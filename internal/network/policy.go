package network

// Per-sandbox egress policy (E2B's network.allowOut / denyOut).
//
// A policy narrows what the server-wide rules allow; it never widens them.
// The egress chain jumps to chain "policy" after the sandbox subnet is
// dropped and before the operator's --sandbox-allow-cidr and the blocked
// ranges are looked at. "policy" dispatches on the sandbox's host veth to
// the sandbox's own chain, which returns for an allowed destination
// (allowed entries win over denied ones, as on E2B) and drops a denied
// one; whatever returns then meets the server-wide rules, so an allowOut
// entry inside a private range or the host stays closed unless the
// operator opened it.
//
// Domain names in allowOut are resolved on the host (the host's resolver,
// the one the sandbox uses too) and their IPv4 addresses allowed; they are
// resolved again every domainRefresh. Limits, said in docs/security.md:
// an address serves every name hosted on it (allowing a CDN-hosted name
// allows the CDN's other customers on the same address), a name whose
// answers rotate faster than the refresh can be briefly unreachable, and
// wildcard names ("*.example.com") cannot be enumerated, so they are
// refused. DNS itself stays open to the resolvers whatever the policy.
//
// Policies are kept in memory, written to PolicyDir (one JSON file per
// sandbox, so a restarted server applies them again) and built into the
// table on every install: a reinstall (nft flush ruleset, a resolver
// change) cannot lose them. A change rebuilds the whole table in one
// transaction, which keeps every rule in force throughout.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/sbxdev/sbx/internal/atomicfile"
	"github.com/sbxdev/sbx/internal/errdefs"
)

// Policy is a sandbox's egress policy. The zero Policy allows everything
// the server allows.
type Policy struct {
	Allow   []netip.Prefix `json:"allow,omitempty"`
	Deny    []netip.Prefix `json:"deny,omitempty"`
	Domains []string       `json:"domains,omitempty"` // allowed names, resolved on the host
}

// Empty tells whether p changes nothing.
func (p Policy) Empty() bool { return len(p.Allow) == 0 && len(p.Deny) == 0 && len(p.Domains) == 0 }

// Limits on a policy: each entry becomes a rule.
const (
	MaxPolicyEntries = 256
	maxDomainLen     = 253
	domainRefresh    = 60 * time.Second
	resolveTimeout   = 5 * time.Second
)

// ParsePolicy builds a policy from E2B's allowOut and denyOut lists: CIDRs,
// bare IPv4 addresses and, in allowOut, domain names.
func ParsePolicy(allowOut, denyOut []string) (Policy, error) {
	var p Policy
	if len(allowOut)+len(denyOut) > MaxPolicyEntries {
		return p, errdefs.Invalid("network: at most %d allowOut and denyOut entries in all", MaxPolicyEntries)
	}
	for _, s := range allowOut {
		if pfx, ok, err := parseAddr("allowOut", s); err != nil {
			return p, err
		} else if ok {
			p.Allow = append(p.Allow, pfx)
			continue
		}
		d, err := parseDomain(s)
		if err != nil {
			return p, err
		}
		if !slices.Contains(p.Domains, d) {
			p.Domains = append(p.Domains, d)
		}
	}
	for _, s := range denyOut {
		pfx, ok, err := parseAddr("denyOut", s)
		if err != nil {
			return p, err
		}
		if !ok {
			return p, errdefs.Invalid("network.denyOut %q: deny rules take CIDRs or IPv4 addresses, not domain names (as on E2B)", s)
		}
		p.Deny = append(p.Deny, pfx)
	}
	return p, nil
}

// parseAddr parses a CIDR or an address; ok is false for anything that
// looks like neither (a domain name).
func parseAddr(field, s string) (netip.Prefix, bool, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, false, errdefs.Invalid("network.%s %q: not a CIDR (e.g. 8.8.8.0/24): %v", field, s, err)
		}
		if !p.Addr().Is4() {
			return p, false, errdefs.Invalid("network.%s %q: sandboxes have IPv4 only; give an IPv4 range", field, s)
		}
		return p.Masked(), true, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if !a.Is4() {
			return netip.Prefix{}, false, errdefs.Invalid("network.%s %q: sandboxes have IPv4 only; give an IPv4 address", field, s)
		}
		return netip.PrefixFrom(a, 32), true, nil
	}
	return netip.Prefix{}, false, nil
}

func parseDomain(s string) (string, error) {
	d := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
	if strings.HasPrefix(d, "*.") {
		return "", errdefs.Invalid("network.allowOut %q: sbx resolves allowed names on the host and cannot enumerate a wildcard; list the names, or allow their addresses as CIDRs", s)
	}
	if d == "" || len(d) > maxDomainLen || !strings.Contains(d, ".") {
		return "", errdefs.Invalid("network.allowOut %q: want a CIDR, an IPv4 address or a domain name such as api.example.com", s)
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") {
			return "", errdefs.Invalid("network.allowOut %q: not a valid domain name", s)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", errdefs.Invalid("network.allowOut %q: not a valid domain name", s)
			}
		}
	}
	return d, nil
}

// applied is a policy with its names resolved.
type applied struct {
	Policy
	resolved []netip.Prefix // addresses of Domains at the last resolution
}

// SetPolicy replaces the sandbox's egress policy (an empty one removes it)
// and applies it before returning. A sandbox without internet access has
// no egress to narrow; its policy is kept for the record only.
func (m *Manager) SetPolicy(ctx context.Context, id string, p Policy) error {
	if err := validateID(id); err != nil {
		return err
	}
	a := &applied{Policy: p, resolved: resolveAll(ctx, m.lookup, p.Domains, m.log)}
	if err := m.savePolicy(id, p); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if p.Empty() {
		if _, had := m.policies[id]; !had {
			return nil
		}
		delete(m.policies, id)
	} else {
		m.policies[id] = a
	}
	return m.reinstallLocked()
}

// PolicyOf returns the sandbox's policy (zero when it has none).
func (m *Manager) PolicyOf(id string) Policy {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a, ok := m.policies[id]; ok {
		return a.Policy
	}
	return Policy{}
}

// reinstallLocked rebuilds the table with the current policies, when it is
// installing the host side first when this process has not yet.
func (m *Manager) reinstallLocked() error {
	if !m.hostReady {
		// After a restart the table is still the old process's: install
		// it now, with the recovered policies and this one.
		if err := m.ensureHost(context.Background()); err != nil {
			return fmt.Errorf("apply sandbox network policy: %w", err)
		}
		m.hostReady = true
		return nil
	}
	if err := m.fw.install(m.nft); err != nil {
		return fmt.Errorf("apply sandbox network policy: %w", err)
	}
	return nil
}

// dropPolicyLocked forgets a torn-down sandbox's policy so that a later
// sandbox on the same veth name does not inherit it.
func (m *Manager) dropPolicyLocked(id string) {
	_ = os.Remove(m.policyPath(id))
	if _, ok := m.policies[id]; !ok {
		return
	}
	delete(m.policies, id)
	if err := m.reinstallLocked(); err != nil {
		m.log.Warn("remove a torn-down sandbox's network policy", "sandbox.id", id, "err", err)
	}
}

func (m *Manager) policyDir() string { return m.cfg.NetnsDir + "-policy" }

func (m *Manager) policyPath(id string) string { return filepath.Join(m.policyDir(), id+".json") }

func (m *Manager) savePolicy(id string, p Policy) error {
	if p.Empty() {
		if err := os.Remove(m.policyPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove network policy of sandbox %s: %w", id, err)
		}
		return nil
	}
	if err := os.MkdirAll(m.policyDir(), 0o700); err != nil {
		return fmt.Errorf("save network policy: %w", err)
	}
	// Durable: the policy is what a restarted server (or one after a host
	// crash, for a sandbox paused to disk) puts back; a torn one denies
	// all of the sandbox's egress.
	b, _ := json.Marshal(p)
	if err := atomicfile.Write(m.policyPath(id), b, 0o600); err != nil {
		return fmt.Errorf("save network policy of sandbox %s: %w", id, err)
	}
	return nil
}

// loadPolicies reads the policies of the sandboxes found at start.
func (m *Manager) loadPolicies(ids []string) {
	for _, id := range ids {
		b, err := os.ReadFile(m.policyPath(id))
		if err != nil {
			continue
		}
		var p Policy
		if err := json.Unmarshal(b, &p); err != nil {
			m.log.Warn("unreadable sandbox network policy; denying all its egress", "sandbox.id", id, "err", err)
			p = Policy{Deny: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}} // fail closed
		}
		ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
		m.policies[id] = &applied{Policy: p, resolved: resolveAll(ctx, m.lookup, p.Domains, m.log)}
		cancel()
	}
}

// refreshDomains resolves the policies' names again and rebuilds the
// table when an answer changed. Lookups run without the lock.
func (m *Manager) refreshDomains() {
	m.mu.Lock()
	todo := map[string][]string{}
	for id, a := range m.policies {
		if len(a.Domains) > 0 {
			todo[id] = a.Domains
		}
	}
	m.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	fresh := map[string][]netip.Prefix{}
	for id, names := range todo {
		ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
		fresh[id] = resolveAll(ctx, m.lookup, names, m.log)
		cancel()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := false
	for id, r := range fresh {
		if a, ok := m.policies[id]; ok && !slices.Equal(a.resolved, r) && len(r) > 0 {
			a.resolved, changed = r, true
		}
	}
	if changed {
		if err := m.reinstallLocked(); err != nil {
			m.log.Warn("refresh allowed sandbox domains", "err", err)
		}
	}
}

// resolveAll returns the IPv4 addresses of names, sorted, as /32s.
func resolveAll(ctx context.Context, lookup func(context.Context, string) ([]netip.Addr, error), names []string, log interface {
	Warn(string, ...any)
}) []netip.Prefix {
	var out []netip.Prefix
	for _, n := range names {
		addrs, err := lookup(ctx, n)
		if err != nil {
			log.Warn("resolve an allowed sandbox domain", "domain", n, "err", err)
			continue
		}
		for _, a := range addrs {
			a = a.Unmap()
			if p := netip.PrefixFrom(a, 32); a.Is4() && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

func defaultLookup(ctx context.Context, name string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip4", name)
}

// addPolicies writes chain "policy" and one chain per sandbox with a
// policy and a veth. The caller holds mu (install runs under it).
func (f *firewall) addPolicies(c *nftables.Conn, t *nftables.Table, policy *nftables.Chain,
	add func(*nftables.Chain, ...[]expr.Any) *nftables.Rule) {
	ids := make([]string, 0, len(f.policies))
	for id := range f.policies {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		a := f.policies[id]
		veth, ok := f.ifaces[id]
		if !ok {
			continue
		}
		ch := c.AddChain(&nftables.Chain{Name: "p-" + veth, Table: t})
		for _, p := range append(slices.Clone(a.Allow), a.resolved...) {
			add(ch, daddr(p), verdict(expr.VerdictReturn))
		}
		for _, p := range a.Deny {
			add(ch, daddr(p), verdict(expr.VerdictDrop))
		}
		add(policy, exactIfname(expr.MetaKeyIIFNAME, veth), jump(ch.Name))
	}
}

// exactIfname matches an interface name exactly (the kernel compares the
// NUL-padded 16 bytes).
func exactIfname(key expr.MetaKey, name string) []expr.Any {
	b := make([]byte, 16)
	copy(b, name)
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b}}
}
