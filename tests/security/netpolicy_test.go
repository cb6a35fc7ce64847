package security

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/sdk"
	"github.com/sbxdev/sbx/tests/harness"
)

// A sandbox's network policy (E2B's allowOut/denyOut, PUT .../network)
// narrows its egress and never widens the server's: allowOut naming the
// host or a private range leaves them closed, and another team cannot
// change it. The Debian mirror (opened by --sandbox-allow-cidr, as the
// operator does for a local mirror) is the reachable destination.
func TestSandboxPolicyNarrowsButNeverOpens(t *testing.T) {
	srv := startServer(t, harness.MirrorAllowFlags(t)...)
	mirrorHost, mirrorAddr := hostMirror(t)
	addrs := []string{mirrorAddr}
	s := create(t, srv.Client(t), sdk.CreateOptions{})
	reach := func(host, port string) bool {
		t.Helper()
		out := sh(t, s, "root", fmt.Sprintf(`python3 -c "import socket; socket.create_connection(('%s', %s), 3); print('open')"`, host, port))
		return strings.Contains(out.Stdout, "open")
	}
	put := func(key, body string) int {
		t.Helper()
		return srv.Raw(t, "PUT", "/sandboxes/"+s.ID+"/network", body, map[string]string{"X-API-Key": key}).Status
	}
	if !reach(addrs[0], "80") {
		t.Fatalf("sandbox cannot reach the allowed mirror %s before any policy", addrs[0])
	}
	// A service on the host's own address: what allowOut must not open.
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	hostPort := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	hostAddr := bldHostAddr(t)
	if c, err := net.Dial("tcp4", net.JoinHostPort(hostAddr, hostPort)); err != nil {
		t.Fatalf("the host service at %s:%s does not answer the host itself: %v", hostAddr, hostPort, err)
	} else {
		c.Close()
	}
	for _, tt := range []struct {
		name, body   string
		mirror, host bool
	}{
		{"deny the mirror", fmt.Sprintf(`{"denyOut":["%s"]}`, addrs[0]), false, false},
		{"deny all, allow the mirror by name", fmt.Sprintf(`{"allowOut":["%s"],"denyOut":["0.0.0.0/0"]}`, mirrorHost), true, false},
		{"allow everything incl. the host", fmt.Sprintf(`{"allowOut":["0.0.0.0/0","%s","127.0.0.1","10.0.0.0/8"]}`, hostAddr), true, false},
		{"internet off", `{"allow_internet_access":false}`, false, false},
	} {
		if st := put(srv.APIKey, tt.body); st != 204 {
			t.Fatalf("%s: PUT network answered %d", tt.name, st)
		}
		if got := reach(addrs[0], "80"); got != tt.mirror {
			t.Errorf("%s: mirror reachable = %v, want %v", tt.name, got, tt.mirror)
		}
		if got := reach(hostAddr, hostPort); got != tt.host {
			t.Errorf("%s: a host service at %s:%s reachable = %v, want %v", tt.name, hostAddr, hostPort, got, tt.host)
		}
	}
	other := srv.CreateTeam(t, "netpolicy-other")
	if st := put(other, `{}`); st != 404 {
		t.Errorf("another team's PUT network answered %d, want 404", st)
	}
	if reach(addrs[0], "80") {
		t.Error("another team's request changed the policy")
	}
}

// A fork's clones keep their source's network settings: a clone of a
// sandbox whose ports need a traffic token, or whose egress is narrowed,
// must not come out public or open (it did: fork built clones without the
// policy, and the proxy let anyone through to the clone's ports).
func TestForkKeepsNetworkPolicy(t *testing.T) {
	srv := startServer(t)
	c := srv.Client(t)
	private := false
	src := create(t, c, sdk.CreateOptions{Network: &sdk.NetworkOptions{
		AllowPublicTraffic: &private, DenyOut: []string{"198.51.100.0/24"}}})
	if src.TrafficAccessToken == "" {
		t.Fatal("the source got no traffic access token")
	}
	forks, err := c.Fork(t.Context(), src.ID, 1, time.Minute)
	if err != nil || len(forks) != 1 || forks[0].Err != nil {
		t.Fatalf("fork: %v %+v", err, forks)
	}
	clone := forks[0].Sandbox
	t.Cleanup(func() { _ = clone.Kill(t.Context()) })
	port := map[string]string{"E2b-Sandbox-Id": clone.ID, "E2b-Sandbox-Port": "8000"}
	if r := srv.Raw(t, "GET", "/", "", port); r.Status != 403 {
		t.Errorf("the clone's private port without a token answered %d, want 403: %s", r.Status, r.Body)
	}
	port["E2b-Traffic-Access-Token"] = src.TrafficAccessToken
	if clone.TrafficAccessToken == "" || clone.TrafficAccessToken == src.TrafficAccessToken {
		t.Errorf("clone's traffic token %q: want one of its own", clone.TrafficAccessToken)
	} else if r := srv.Raw(t, "GET", "/", "", port); r.Status != 403 {
		t.Errorf("the source's token opened the clone's port: %d", r.Status)
	}
	d := srv.Raw(t, "GET", "/sandboxes/"+clone.ID, "", map[string]string{"X-API-Key": srv.APIKey})
	if !strings.Contains(d.Body, "198.51.100.0/24") {
		t.Errorf("the clone's network settings lost the source's denyOut: %s", d.Body)
	}
}
