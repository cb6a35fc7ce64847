package network

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// Begin hands out a namespace the runtime can start a sandbox in at once;
// its link to the host arrives with attach, fully configured, and the host
// end never takes IPv6.
func TestBeginThenAttach(t *testing.T) {
	m, _ := newTestManager(t)
	o := newOutside(t, m)
	srv := listen(t, o.path, o.addr.String()+":0")
	id := "n" + randHex(t, 15)
	path, attach, err := m.Begin(t.Context(), id, true)
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	t.Cleanup(func() { _ = m.Teardown(t.Context(), id) })
	if got := links(t, path); !slices.Equal(got, []string{"lo"}) {
		t.Errorf("links before attach = %v; want [lo] (nothing leads out yet)", got)
	}
	ln := listen(t, path, "127.0.0.1:0") // a sandbox starting now has loopback
	if _, err := dial(t, path, ln.Addr().String()); err != nil {
		t.Errorf("loopback before attach: %v", err)
	}
	if _, _, ok := m.DirectPath(id); ok {
		t.Errorf("DirectPath(%s) reports a route before attach", id)
	}
	if err := attach(t.Context()); err != nil {
		t.Fatalf("attach: %v", err)
	}
	if got := links(t, path); !slices.Contains(got, "eth0") {
		t.Errorf("links after attach = %v; want eth0 too", got)
	}
	if _, err := dial(t, path, srv.Addr().String()); err != nil {
		t.Errorf("sandbox cannot reach the outside after attach: %v\n%s", err, netDebug(path, o.path))
	}
	addr, iface, ok := m.DirectPath(id)
	if !ok || !addr.IsValid() {
		t.Fatalf("DirectPath(%s) = %v %q %v after attach", id, addr, iface, ok)
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + iface + "/disable_ipv6"); err != nil || strings.TrimSpace(string(b)) != "1" {
		t.Errorf("host end %s: disable_ipv6 = %q, %v; want 1", iface, b, err)
	}
	l, err := netlink.LinkByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	if v6, _ := netlink.AddrList(l, netlink.FAMILY_V6); len(v6) > 0 {
		t.Errorf("host end %s has IPv6 addresses %v", iface, v6)
	}
}

// Setup is Begin and attach in one.
func TestSetupIsBeginAndAttach(t *testing.T) {
	m, _ := newTestManager(t)
	id, path := setup(t, m, true)
	t.Cleanup(func() { _ = m.Teardown(t.Context(), id) })
	if got := links(t, path); !slices.Contains(got, "eth0") {
		t.Errorf("links after Setup = %v; want eth0", got)
	}
	if _, _, ok := m.DirectPath(id); !ok {
		t.Errorf("DirectPath(%s) after Setup: no route", id)
	}
}
