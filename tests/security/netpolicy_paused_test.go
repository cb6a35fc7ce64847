package security

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/rootfs"
	"github.com/sbxdev/sbx/sdk"
	"github.com/sbxdev/sbx/tests/harness"
)

// REVIEW: a policy set (PUT /network, 204) while a sandbox is paused
// without its memory must be in force once it is resumed. The network
// manager records it for an id without a veth, so no chain is written, and
// the attach at the reboot records the veth without rebuilding the table.
func TestPolicySetWhilePausedWithoutMemory(t *testing.T) {
	srv := startServer(t, harness.MirrorAllowFlags(t)...)
	mirror, err := rootfs.HostMirror("bookworm")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(mirror)
	addrs, err := net.LookupHost(u.Hostname())
	if err != nil || len(addrs) == 0 {
		t.Fatalf("resolve %s: %v", u.Hostname(), err)
	}
	c := srv.Client(t)
	s := create(t, c, sdk.CreateOptions{Timeout: 5 * time.Minute})
	reach := func(s *sdk.Sandbox) bool {
		t.Helper()
		out := sh(t, s, "root", fmt.Sprintf(`python3 -c "import socket; socket.create_connection(('%s', 80), 2); print('open')"`, addrs[0]))
		return strings.Contains(out.Stdout, "open")
	}
	if !reach(s) {
		t.Fatalf("the mirror %s is not reachable to begin with: nothing to compare with", addrs[0])
	}
	if r := srv.Raw(t, "POST", "/sandboxes/"+s.ID+"/pause", `{"memory":false}`, map[string]string{"X-API-Key": srv.APIKey}); r.Status != 204 {
		t.Fatalf("pause without memory = %d %s", r.Status, r.Body)
	}
	body := fmt.Sprintf(`{"denyOut":[%q]}`, addrs[0])
	if r := srv.Raw(t, "PUT", "/sandboxes/"+s.ID+"/network", body, map[string]string{"X-API-Key": srv.APIKey}); r.Status != 204 {
		t.Fatalf("PUT network while paused = %d %s", r.Status, r.Body)
	}
	back, err := c.Connect(t.Context(), s.ID, sdk.ConnectOptions{})
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	if reach(back) {
		t.Errorf("the mirror %s, denied (204) while the sandbox was paused, is reachable after the resume", addrs[0])
	}
}

// REVIEW: a sandbox created with one policy and given another while paused
// without its memory resumes with the new one, not the one its pause
// marker recorded.
func TestPolicyReplacedWhilePausedWithoutMemory(t *testing.T) {
	srv := startServer(t, harness.MirrorAllowFlags(t)...)
	mirror, err := rootfs.HostMirror("bookworm")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(mirror)
	addrs, err := net.LookupHost(u.Hostname())
	if err != nil || len(addrs) == 0 {
		t.Fatalf("resolve %s: %v", u.Hostname(), err)
	}
	c := srv.Client(t)
	s := create(t, c, sdk.CreateOptions{Timeout: 5 * time.Minute, Network: &sdk.NetworkOptions{DenyOut: []string{"192.0.2.1"}}})
	reach := func(s *sdk.Sandbox) bool {
		t.Helper()
		out := sh(t, s, "root", fmt.Sprintf(`python3 -c "import socket; socket.create_connection(('%s', 80), 2); print('open')"`, addrs[0]))
		return strings.Contains(out.Stdout, "open")
	}
	if !reach(s) {
		t.Fatalf("the mirror %s is not reachable to begin with: nothing to compare with", addrs[0])
	}
	if r := srv.Raw(t, "POST", "/sandboxes/"+s.ID+"/pause", `{"memory":false}`, map[string]string{"X-API-Key": srv.APIKey}); r.Status != 204 {
		t.Fatalf("pause without memory = %d %s", r.Status, r.Body)
	}
	body := fmt.Sprintf(`{"denyOut":[%q]}`, addrs[0])
	if r := srv.Raw(t, "PUT", "/sandboxes/"+s.ID+"/network", body, map[string]string{"X-API-Key": srv.APIKey}); r.Status != 204 {
		t.Fatalf("PUT network while paused = %d %s", r.Status, r.Body)
	}
	back, err := c.Connect(t.Context(), s.ID, sdk.ConnectOptions{})
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	if reach(back) {
		t.Errorf("the mirror %s, denied (204) while the sandbox was paused, is reachable after the resume: the pause's policy came back", addrs[0])
	}
}
