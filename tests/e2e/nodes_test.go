package e2e

import (
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/sdk"
)

// TestNodeLost (cluster issue): two servers on one PostgreSQL; one is
// SIGKILLed and stays down. The other's sweep declares it lost after the
// grace and records its running sandbox killed with reason node_lost, with
// the event streamed to clients; the survivor's sandbox keeps working.
// When the lost server restarts it rejoins, destroys the container it no
// longer owns, and creates again.
func TestNodeLost(t *testing.T) {
	a, b := startPair(t, "--node-grace", "3s")
	ca, cb := a.Client(t), b.Client(t)
	seen := streamEvents(t, a)
	survivor := create(t, ca, sdk.CreateOptions{Timeout: 10 * time.Minute})
	doomed := create(t, cb, sdk.CreateOptions{Timeout: 10 * time.Minute})

	b.Stop(syscall.SIGKILL)
	killed := time.Now()
	deadline := time.After(60 * time.Second)
wait:
	for {
		select {
		case ev := <-seen:
			if ev.SandboxID == doomed.ID && ev.Type == "sandbox.lifecycle.killed" {
				t.Logf("B's sandbox was reported killed %v after B was SIGKILLed (grace 3 s)", time.Since(killed).Round(time.Millisecond))
				break wait
			}
		case <-deadline:
			t.Fatalf("B's sandbox %s was not reported killed within 60 s of B's death\nA's log:\n%s", doomed.ID, a.Log())
		}
	}
	r := a.Raw(t, "GET", "/events/sandboxes/"+doomed.ID, "", map[string]string{"X-API-Key": a.APIKey})
	if r.Status != http.StatusOK || !strings.Contains(r.Body, `"node_lost"`) || !strings.Contains(r.Body, `"node-b"`) {
		t.Errorf("GET /events/sandboxes/%s = %d %s; want a killed event with reason node_lost naming node-b", doomed.ID, r.Status, r.Body)
	}
	if res, err := survivor.Commands.Run(opCtx(t), "echo alive", sdk.RunOptions{}); err != nil || strings.TrimSpace(res.Stdout) != "alive" {
		t.Fatalf("A's sandbox after B was lost: %+v, %v", res, err)
	}
	if got, err := ca.Get(opCtx(t), survivor.ID); err != nil || got.State != "running" {
		t.Errorf("A's sandbox reads %+v, %v; want running", got, err)
	}

	// B comes back: a new boot of a lost node rejoins; the container of
	// the sandbox recorded killed goes, and B runs new sandboxes.
	b.Start(t)
	gone := time.Now()
	for {
		if _, ok := b.CrunStates(t)[doomed.ID]; !ok {
			break
		}
		if time.Since(gone) > 30*time.Second {
			t.Fatalf("B kept the container of %s, which was recorded killed while B was lost", doomed.ID)
		}
		time.Sleep(50 * time.Millisecond)
	}
	again := create(t, cb, sdk.CreateOptions{})
	if res, err := again.Commands.Run(opCtx(t), "echo back", sdk.RunOptions{}); err != nil || strings.TrimSpace(res.Stdout) != "back" {
		t.Fatalf("a sandbox on B after it rejoined: %+v, %v", res, err)
	}
}
