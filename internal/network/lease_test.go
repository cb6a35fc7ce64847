package network

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Two servers sharing the subnet (and the lease dir) never hand out the same
// address; a lease whose namespace is gone is taken over.
func TestLeasesAcrossAllocators(t *testing.T) {
	dir := t.TempDir()
	nsDir := t.TempDir()
	newAlloc := func(name string) *ipam {
		m, err := newIPAM("10.99.0.0/29") // 5 usable addresses after the gateway
		if err != nil {
			t.Fatal(err)
		}
		m.leases = leases{dir: dir}
		m.owner = func(id string) string { return filepath.Join(nsDir, name+"-"+id) }
		return m
	}
	a, b := newAlloc("a"), newAlloc("b")
	seen := map[netip.Addr]string{}
	for i, m := range []*ipam{a, b, a, b} {
		id := string(rune('p' + i))
		addr, err := m.allocate(id)
		if err != nil {
			t.Fatalf("allocate %s: %v", id, err)
		}
		if prev, dup := seen[addr]; dup {
			t.Fatalf("address %s handed out twice (%s and %s)", addr, prev, id)
		}
		seen[addr] = id
		// The owner namespace exists while the sandbox lives.
		if err := os.WriteFile(m.owner(id), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Release one in a: b may now use it.
	freed := a.byID["p"]
	a.release("p")
	if _, err := os.Stat(filepath.Join(dir, freed.String())); !os.IsNotExist(err) {
		t.Fatalf("lease of released %s still present: %v", freed, err)
	}
	// A stale lease (owner gone, older than the grace period) is taken over.
	stale := b.byID["q"]
	os.Remove(b.owner("q"))
	old := time.Now().Add(-2 * leaseGrace)
	os.Chtimes(filepath.Join(dir, stale.String()), old, old)
	c := newAlloc("c")
	got := map[netip.Addr]bool{}
	// Three: the released, the stale and the one never handed out, which
	// c's search (starting anywhere) may come to first.
	for _, id := range []string{"x", "y", "z"} {
		addr, err := c.allocate(id)
		if err != nil {
			t.Fatalf("allocate %s: %v", id, err)
		}
		got[addr] = true
	}
	if !got[freed] || !got[stale] {
		t.Fatalf("third allocator got %v, want the released %s and the stale %s", got, freed, stale)
	}
}
