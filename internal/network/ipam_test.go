package network

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/errdefs"
)

func TestIPAMAllocatesRoundRobinAndExhausts(t *testing.T) {
	m, err := newIPAM("10.9.0.0/29") // .1 gateway, .2-.6 usable, .7 broadcast
	if err != nil {
		t.Fatal(err)
	}
	if m.gateway != netip.MustParseAddr("10.9.0.1") {
		t.Errorf("gateway = %s; want 10.9.0.1", m.gateway)
	}
	m.next = netip.MustParseAddr("10.9.0.2") // not where newIPAM's search starts (at random)
	var got []string
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		a, err := m.allocate(id)
		if err != nil {
			t.Fatalf("allocate(%s): %v", id, err)
		}
		got = append(got, a.String())
	}
	want := []string{"10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("allocation %d = %s; want %s", i, got[i], want[i])
		}
	}
	if again, _ := m.allocate("c"); again.String() != "10.9.0.4" {
		t.Errorf("allocate of an existing id = %s; want its address 10.9.0.4", again)
	}
	if _, err := m.allocate("f"); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("allocate in a full subnet = %v; want resource exhausted", err)
	}
	m.release("b")
	m.release("b") // twice is fine
	if a, err := m.allocate("f"); err != nil || a.String() != "10.9.0.3" {
		t.Errorf("allocate after release = %s, %v; want the freed 10.9.0.3", a, err)
	}
}

func TestIPAMDoesNotReuseAtOnce(t *testing.T) {
	m, _ := newIPAM("10.9.0.0/24")
	a1, _ := m.allocate("a")
	m.release("a")
	a2, _ := m.allocate("b")
	if a1 == a2 {
		t.Errorf("a released address %s was handed out again at once", a1)
	}
}

// Every allocator starts its search at a random usable address: servers
// on one host (and a server restarted) all starting at the first would
// hand out the addresses just freed by another, whose stale veths and
// conntrack entries then hit the new sandbox. A start anywhere in the
// range, the last usable address too, must still wrap round to the free
// one, and never land on the gateway or the broadcast address.
func TestIPAMStartsAnywhereAndWraps(t *testing.T) {
	t.Parallel()
	const subnet = "10.9.0.0/29" // .1 gateway, .2-.6 usable, .7 broadcast
	starts := map[string]int{}
	for range 1000 {
		m, err := newIPAM(subnet)
		if err != nil {
			t.Fatal(err)
		}
		a, err := m.allocate("first")
		if err != nil {
			t.Fatal(err)
		}
		starts[a.String()]++
	}
	for _, want := range []string{"10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"} {
		if starts[want] == 0 {
			t.Errorf("no allocator of 1000 started at %s: starts %v", want, starts)
		}
	}
	for a := range starts {
		if p := netip.MustParseAddr(a); p.Compare(netip.MustParseAddr("10.9.0.2")) < 0 || p.Compare(netip.MustParseAddr("10.9.0.6")) > 0 {
			t.Errorf("an allocator started at %s, outside the usable range", a)
		}
	}
	for _, tc := range []struct {
		taken []string
		want  string // "" for none left
	}{
		{taken: []string{"10.9.0.2", "10.9.0.3", "10.9.0.5", "10.9.0.6"}, want: "10.9.0.4"},
		{taken: []string{"10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"}, want: "10.9.0.2"},
		{taken: []string{"10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5"}, want: "10.9.0.6"},
		{taken: []string{"10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"}},
	} {
		for range 50 { // from many starts
			m, _ := newIPAM(subnet)
			for i, a := range tc.taken {
				if err := m.reserve(fmt.Sprint("old", i), netip.MustParseAddr(a)); err != nil {
					t.Fatal(err)
				}
			}
			a, err := m.allocate("new")
			if tc.want == "" {
				if !errors.Is(err, errdefs.ErrResourceExhausted) {
					t.Fatalf("taken %v: allocate = %s, %v; want resource exhausted", tc.taken, a, err)
				}
				continue
			}
			if err != nil || a.String() != tc.want {
				t.Fatalf("taken %v: allocate = %s, %v; want %s", tc.taken, a, err, tc.want)
			}
		}
	}
	// Two servers on a large subnet: not the same first address.
	a, _ := newIPAM("10.0.0.0/8")
	b, _ := newIPAM("10.0.0.0/8")
	if x, y := a.next, b.next; x == y {
		t.Errorf("two allocators start at %s (1 in 16 million by chance)", x)
	}
}

func TestIPAMReserve(t *testing.T) {
	m, _ := newIPAM("10.9.0.0/24")
	tests := []struct {
		id, addr string
		ok       bool
	}{
		{"a", "10.9.0.2", true},
		{"a", "10.9.0.2", true}, // same owner again
		{"b", "10.9.0.2", false},
		{"c", "10.9.0.1", false},   // gateway
		{"d", "10.9.0.255", false}, // broadcast
		{"e", "10.10.0.5", false},  // outside
	}
	for _, tc := range tests {
		err := m.reserve(tc.id, netip.MustParseAddr(tc.addr))
		if (err == nil) != tc.ok {
			t.Errorf("reserve(%s, %s) = %v; want ok=%v", tc.id, tc.addr, err, tc.ok)
		}
	}
	if a, _ := m.allocate("z"); a.String() == "10.9.0.2" {
		t.Errorf("reserved address handed out again")
	}
}

func TestIPAMRejectsBadSubnets(t *testing.T) {
	for _, s := range []string{"", "10.0.0.0", "fd00::/64", "10.0.0.0/30", "10.0.0.0/4"} {
		if _, err := newIPAM(s); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("newIPAM(%q) = %v; want invalid argument", s, err)
		}
	}
}

// Host veth names carry the manager's tag and the address, fit the 15
// bytes of an interface name, never look like an older build's
// "sbx" + 12 hex digits, and differ for every address of any subnet.
func TestVethNames(t *testing.T) {
	t.Parallel()
	old := regexp.MustCompile(`^sbx[0-9a-f]{12}$`)
	seen := map[string]string{}
	for _, dir := range []string{"/var/lib/sbx/netns", "/tmp/x/netns", "/tmp/x/netns/"} {
		m := &Manager{fw: &firewall{ifPrefix: vethPrefix + tagFor(dir)}}
		if tagFor(dir) != tagFor(filepath.Clean(dir)) || len(tagFor(dir)) != 5 {
			t.Errorf("tagFor(%q) = %q", dir, tagFor(dir))
		}
		for _, a := range []string{"10.0.0.2", "10.255.255.254", "10.88.0.2", "10.88.1.2", "192.168.7.9"} {
			n := m.vethName(netip.MustParseAddr(a))
			if len(n) > 15 || old.MatchString(n) || !strings.HasPrefix(n, m.fw.ifPrefix) {
				t.Errorf("vethName(%s) = %q", a, n)
			}
			key := filepath.Clean(dir) + " " + a
			if prev, ok := seen[n]; ok && prev != key {
				t.Errorf("%q names both %s and %s", n, prev, key)
			}
			seen[n] = key
		}
	}
	if tagFor("/var/lib/sbx/netns") == tagFor("/tmp/x/netns") {
		t.Errorf("two data dirs got the same tag")
	}
}
