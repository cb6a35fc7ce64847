package security

import (
	"fmt"
	"testing"
	"time"

	"github.com/sbxdev/sbx/sdk"
	"github.com/sbxdev/sbx/tests/harness"
)

// TestPolicyAcrossPauseWithoutMemory: a sandbox paused without its memory
// and resumed has the egress policy it was last given. The pause tears
// its network down (dropping its firewall chain); the resumed sandbox
// booted with open egress (kept), a policy PUT while it was paused had no
// chain once it booted (set), and the policy of the pause came back over
// one PUT since (replaced).
func TestPolicyAcrossPauseWithoutMemory(t *testing.T) {
	srv := startServer(t, harness.MirrorAllowFlags(t)...)
	_, mirror := hostMirror(t)
	c := srv.Client(t)
	key := map[string]string{"X-API-Key": srv.APIKey}
	for _, tt := range []struct {
		name   string
		create []string // denyOut at create
		put    []string // denyOut PUT while paused; nil = no PUT
	}{
		{"kept", []string{mirror}, nil},
		{"set while paused", nil, []string{mirror}},
		{"replaced while paused", []string{"192.0.2.1"}, []string{mirror}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opts := sdk.CreateOptions{Timeout: 5 * time.Minute}
			if tt.create != nil {
				opts.Network = &sdk.NetworkOptions{DenyOut: tt.create}
			}
			s := create(t, c, opts)
			if got, want := reachesPort80(t, s, mirror), tt.put != nil; got != want {
				t.Fatalf("before the pause the mirror %s reachable = %v, want %v", mirror, got, want)
			}
			if r := srv.Raw(t, "POST", "/sandboxes/"+s.ID+"/pause", `{"memory":false}`, key); r.Status != 204 {
				t.Fatalf("pause without memory = %d %s", r.Status, r.Body)
			}
			if tt.put != nil {
				body := fmt.Sprintf(`{"denyOut":[%q]}`, tt.put[0])
				if r := srv.Raw(t, "PUT", "/sandboxes/"+s.ID+"/network", body, key); r.Status != 204 {
					t.Fatalf("PUT network while paused = %d %s", r.Status, r.Body)
				}
			}
			back, err := c.Connect(t.Context(), s.ID, sdk.ConnectOptions{})
			if err != nil {
				t.Fatalf("resume: %v", err)
			}
			if reachesPort80(t, back, mirror) {
				t.Errorf("the mirror %s, which the sandbox's last policy denies, is reachable after the resume", mirror)
			}
		})
	}
}
