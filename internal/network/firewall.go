package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/netguard"
)

// The firewall is one nftables table per Manager, "sbx-<tag>" in the inet
// family, replaced as a whole in one transaction. It matches the manager's
// host veths by their name prefix ("sbx-<tag>"), so it holds no
// per-sandbox state: a sandbox's rules exist exactly as long as its veth.
//
// nftables rather than iptables chains: a drop in any nftables base chain
// is final, whatever other tables (iptables-nft's, Docker's, an older sbx's
// SBX-FWD-SBX0 with its ACCEPT for sbx0) accept at the same hook, so the
// sandbox policy cannot be bypassed by rule order, and no other program's
// table is touched.
//
//	prerouting (raw, before conntrack)
//	  from a sandbox: IPv6 → drop; source address not routed back out of
//	  the same veth (fib saddr . iif) → drop. A sandbox can only send with
//	  its own address, whatever it writes on a raw socket.
//	input (from a sandbox to this host)        → chain to-host
//	  established/related → accept; DNS to the resolvers → accept;
//	  the gateway → drop; --sandbox-allow-cidr → accept; else drop
//	forward
//	  to a sandbox (any source)                → chain ingress:
//	    established/related → accept; else drop (sandboxes accept no
//	    connections except from the host itself, i.e. the proxy)
//	  from a sandbox                           → chain egress:
//	    established/related → accept; DNS to the resolvers → accept;
//	    the sandbox subnet → drop; the sandbox's own policy, if any
//	    (chain policy → p-<veth>: may drop, never accepts; policy.go);
//	    --sandbox-allow-cidr → accept;
//	    netguard.Blocked (private, reserved, ...) → drop; else accept
//	postrouting (nat): from the subnet, out of a non-sandbox interface → masquerade

const (
	tablePrefix = "sbx-"
	// ownerComment tags the first rule of the input chain with the
	// namespace directory of the manager that owns the table, so a later
	// manager can tell a table left by a server that is gone (its data
	// dir removed) from one in use.
	ownerComment = "sbx netns-dir="
)

var tableNameRE = regexp.MustCompile(`^sbx-[0-9a-f]{5}$`)

// firewall holds what the table is built from.
type firewall struct {
	table     string // "sbx-<tag>"
	ifPrefix  string // host veth names start with this
	subnet    netip.Prefix
	gateway   netip.Addr
	allow     []netip.Prefix
	resolvers []netip.Addr // IPv4 only
	owner     string       // NetnsDir
	// policies and ifaces are the manager's maps (sandbox ID → policy,
	// → host veth), read under its mu: per-sandbox chains (policy.go).
	policies map[string]*applied
	ifaces   map[string]string
}

func (f *firewall) tableRef() *nftables.Table {
	return &nftables.Table{Name: f.table, Family: nftables.TableFamilyINet}
}

// install replaces the table in one transaction: a restarted server or a
// new resolver list never opens a window without rules.
func (f *firewall) install(c *nftables.Conn) error {
	t := f.tableRef()
	c.AddTable(t) // create if missing, so that the delete below cannot fail
	c.DelTable(t)
	c.AddTable(t)
	accept := nftables.ChainPolicyAccept
	chain := func(name string, hook *nftables.ChainHook, prio *nftables.ChainPriority, typ nftables.ChainType) *nftables.Chain {
		ch := &nftables.Chain{Name: name, Table: t}
		if hook != nil {
			ch.Hooknum, ch.Priority, ch.Type, ch.Policy = hook, prio, typ, &accept
		}
		return c.AddChain(ch)
	}
	pre := chain("prerouting", nftables.ChainHookPrerouting, nftables.ChainPriorityRaw, nftables.ChainTypeFilter)
	in := chain("input", nftables.ChainHookInput, nftables.ChainPriorityFilter, nftables.ChainTypeFilter)
	fwd := chain("forward", nftables.ChainHookForward, nftables.ChainPriorityFilter, nftables.ChainTypeFilter)
	post := chain("postrouting", nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource, nftables.ChainTypeNAT)
	toHost := chain("to-host", nil, nil, "")
	ingress := chain("ingress", nil, nil, "")
	egress := chain("egress", nil, nil, "")
	policy := chain("policy", nil, nil, "")
	add := func(ch *nftables.Chain, exprs ...[]expr.Any) *nftables.Rule {
		var all []expr.Any
		for _, e := range exprs {
			all = append(all, e...)
		}
		return c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: all})
	}
	fromSandbox := ifname(expr.MetaKeyIIFNAME, f.ifPrefix, expr.CmpOpEq)
	toSandbox := ifname(expr.MetaKeyOIFNAME, f.ifPrefix, expr.CmpOpEq)

	add(pre, fromSandbox, nfproto(unix.NFPROTO_IPV6), verdict(expr.VerdictDrop))
	add(pre, fromSandbox, nfproto(unix.NFPROTO_IPV4), []expr.Any{
		&expr.Fib{Register: 1, FlagSADDR: true, FlagIIF: true, ResultOIF: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}, verdict(expr.VerdictDrop))

	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: append(slices.Clip(fromSandbox), jump(toHost.Name)...),
		UserData: userdata.AppendString(nil, userdata.TypeComment, ownerComment+f.owner)})
	add(toHost, ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept))
	add(toHost, nfprotoNot(unix.NFPROTO_IPV4), verdict(expr.VerdictDrop))
	f.addDNS(add, toHost)
	add(toHost, daddr(netip.PrefixFrom(f.gateway, 32)), verdict(expr.VerdictDrop))
	for _, p := range f.allow {
		add(toHost, daddr(p), verdict(expr.VerdictAccept))
	}
	add(toHost, verdict(expr.VerdictDrop))

	add(fwd, toSandbox, jump(ingress.Name))
	add(fwd, fromSandbox, jump(egress.Name))
	add(ingress, ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept))
	add(ingress, verdict(expr.VerdictDrop))
	add(egress, ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept))
	add(egress, nfprotoNot(unix.NFPROTO_IPV4), verdict(expr.VerdictDrop))
	f.addDNS(add, egress)
	add(egress, daddr(f.subnet), verdict(expr.VerdictDrop))
	add(egress, jump(policy.Name))
	f.addPolicies(c, t, policy, add)
	for _, p := range f.allow {
		add(egress, daddr(p), verdict(expr.VerdictAccept))
	}
	for _, b := range netguard.Blocked {
		if b.Prefix.Addr().Is4() {
			add(egress, daddr(b.Prefix), verdict(expr.VerdictDrop))
		}
	}

	add(post, nfproto(unix.NFPROTO_IPV4), saddr(f.subnet),
		ifname(expr.MetaKeyOIFNAME, f.ifPrefix, expr.CmpOpNeq), []expr.Any{&expr.Masq{}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install nftables table inet %s: %w", f.table, err)
	}
	return nil
}

// addDNS opens port 53 (UDP and TCP) on each resolver, and nothing else on
// them: a private resolver (the host's is 10.255.255.53 on some clouds) is
// otherwise in a blocked range.
func (f *firewall) addDNS(add func(*nftables.Chain, ...[]expr.Any) *nftables.Rule, ch *nftables.Chain) {
	for _, r := range f.resolvers {
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			add(ch, daddr(netip.PrefixFrom(r, 32)), dport(proto, 53), verdict(expr.VerdictAccept))
		}
	}
}

// exists reports whether the table is in the kernel.
func (f *firewall) exists(c *nftables.Conn) (bool, error) {
	_, err := c.ListTableOfFamily(f.table, nftables.TableFamilyINet)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	return false, fmt.Errorf("look up nftables table inet %s: %w", f.table, err)
}

func (f *firewall) remove(c *nftables.Conn) error {
	ok, err := f.exists(c)
	if err != nil || !ok {
		return err
	}
	c.DelTable(f.tableRef())
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete nftables table inet %s: %w", f.table, err)
	}
	return nil
}

// tableOwner returns the NetnsDir recorded in a table, "" if none.
func tableOwner(c *nftables.Conn, name string) string {
	t := &nftables.Table{Name: name, Family: nftables.TableFamilyINet}
	rules, err := c.GetRules(t, &nftables.Chain{Name: "input", Table: t})
	if err != nil {
		return ""
	}
	for _, r := range rules {
		if s, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok {
			if dir, ok := strings.CutPrefix(s, ownerComment); ok {
				return dir
			}
		}
	}
	return ""
}

// checkOwner fails when this manager's table belongs to another server
// whose data dir still exists: two data dirs whose tags collide (1 in a
// million) would otherwise share one policy.
func (f *firewall) checkOwner(c *nftables.Conn) error {
	owner := tableOwner(c, f.table)
	if owner == "" || owner == f.owner {
		return nil
	}
	if _, err := os.Stat(owner); err == nil {
		return fmt.Errorf("nftables table inet %s belongs to the sbx server of %s, which still exists: "+
			"the two data dirs' network tags collide; use another --data-dir", f.table, owner)
	}
	return nil
}

// removeStale deletes the tables of managers whose namespace directory no
// longer exists (a test's temporary data dir, a removed server). A table
// without an owner comment is left alone.
func removeStale(c *nftables.Conn, keep string) []string {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil
	}
	var removed []string
	for _, t := range tables {
		if t.Name == keep || !tableNameRE.MatchString(t.Name) {
			continue
		}
		owner := tableOwner(c, t.Name)
		if owner == "" {
			continue
		}
		if _, err := os.Stat(owner); !errors.Is(err, os.ErrNotExist) {
			continue
		}
		c.DelTable(t)
		if c.Flush() == nil {
			removed = append(removed, t.Name)
		}
	}
	return removed
}

// Expression helpers. Register 1 is the only one used.

func ifname(key expr.MetaKey, prefix string, op expr.CmpOp) []expr.Any {
	// Comparing only len(prefix) bytes of the name is nft's "prefix*".
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: op, Register: 1, Data: []byte(prefix)}}
}

func nfproto(p byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}}}
}

func nfprotoNot(p byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{p}}}
}

func ctState(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

func daddr(p netip.Prefix) []expr.Any { return ipField(16, p) }
func saddr(p netip.Prefix) []expr.Any { return ipField(12, p) }

// ipField matches the IPv4 header field at offset against a prefix. The
// chains using it have already made sure the packet is IPv4.
func ipField(offset uint32, p netip.Prefix) []expr.Any {
	p = p.Masked()
	e := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4}}
	if p.Bits() < 32 {
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: net.CIDRMask(p.Bits(), 32), Xor: make([]byte, 4)})
	}
	return append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()})
}

func dport(proto byte, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

func jump(chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}
}
