package oci

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Two servers sharing the lease dir never give two live sandboxes the same
// range; a released range is reused first; a lease whose sandbox dir is
// gone is taken over once it is older than the grace period.
func TestIDRangesAcrossServers(t *testing.T) {
	t.Parallel()
	leases, owners := t.TempDir(), t.TempDir()
	a, b := &idRanges{dir: leases}, &idRanges{dir: leases}
	owner := func(name string) string {
		p := filepath.Join(owners, name)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	seen := map[uint32]string{}
	got := map[string]idRange{}
	for i, r := range []*idRanges{a, b, a, b, a} {
		name := "sb" + strconv.Itoa(i)
		o := owner(name)
		ids, err := r.take(o)
		if err != nil {
			t.Fatalf("take %s: %v", name, err)
		}
		if prev, dup := seen[ids.UID]; dup {
			t.Fatalf("range %d handed out twice (%s and %s)", ids.UID, prev, name)
		}
		if ids.UID < idBase || ids.Size != idSize || ids.GID != ids.UID || ids.UID != uint32(idBase+ids.Slot*idSize) {
			t.Fatalf("take %s = %+v; want slot-aligned ranges of %d ids from %d", name, ids, idSize, idBase)
		}
		seen[ids.UID] = name
		got[name] = ids
	}
	// Released by a: a gets it back first (its user namespace is cached).
	freed := got["sb2"]
	a.release(freed.Slot, filepath.Join(owners, "sb2"))
	if _, err := os.Stat(filepath.Join(leases, strconv.Itoa(freed.Slot))); !os.IsNotExist(err) {
		t.Fatalf("lease of released slot %d still there: %v", freed.Slot, err)
	}
	if ids, err := a.take(owner("sb5")); err != nil || ids != freed {
		t.Errorf("take after release = %+v, %v; want the released %+v", ids, err, freed)
	}
	// Releasing with the wrong owner leaves the lease alone.
	b.release(got["sb1"].Slot, filepath.Join(owners, "someone-else"))
	if _, err := os.Stat(filepath.Join(leases, strconv.Itoa(got["sb1"].Slot))); err != nil {
		t.Errorf("a release by a non-owner dropped the lease: %v", err)
	}
	// A stale lease (sandbox dir gone, older than the grace period) is taken over;
	// a fresh one is not.
	stale := got["sb0"]
	os.RemoveAll(filepath.Join(owners, "sb0"))
	c := &idRanges{dir: leases}
	if ids, err := c.take(owner("fresh-check")); err != nil || ids.Slot == stale.Slot {
		t.Errorf("take = %+v, %v; a lease younger than the grace period must not be taken over", ids, err)
	}
	old := time.Now().Add(-2 * idLeaseGrace)
	os.Chtimes(filepath.Join(leases, strconv.Itoa(stale.Slot)), old, old)
	d := &idRanges{dir: leases}
	if ids, err := d.take(owner("sb6")); err != nil || ids.Slot != stale.Slot {
		t.Errorf("take = %+v, %v; want the stale slot %d", ids, err, stale.Slot)
	}
}

func TestShiftID(t *testing.T) {
	t.Parallel()
	const base, size = 1 << 30, 1 << 16
	tests := []struct{ in, want uint32 }{
		{base, 0}, {base + 1000, 1000}, {base + size - 1, size - 1},
		{0, 0}, {base - 1, base - 1}, {base + size, base + size},
	}
	for _, tc := range tests {
		if got := shiftID(tc.in, base, size); got != tc.want {
			t.Errorf("shiftID(%d) = %d; want %d", tc.in, got, tc.want)
		}
	}
}
