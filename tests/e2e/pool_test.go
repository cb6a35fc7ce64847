package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/sdk"
)

// A pooled sandbox is handed out once: nothing one user left behind (files,
// processes, env) is ever visible to the next, and IDs never repeat.
func TestPoolNeverHandsOutTwice(t *testing.T) {
	srv := StartServer(t, "--pool", "base=2:4", "--pool", "code-interpreter=0")
	c := srv.Client(t)
	seen := map[string]bool{}
	for i := range 8 {
		s := create(t, c, sdk.CreateOptions{EnvVars: map[string]string{"ROUND": fmt.Sprint(i)}})
		if seen[s.ID] {
			t.Fatalf("sandbox ID %s handed out twice", s.ID)
		}
		seen[s.ID] = true
		out := run(t, s, `ls /tmp/marker-* 2>/dev/null; pgrep -f 'marker-sleepe[r] 600'; echo "round=$ROUND"`, sdk.RunOptions{}).Stdout
		if strings.Contains(out, "marker-") || strings.TrimSpace(out) != fmt.Sprintf("round=%d", i) {
			t.Fatalf("round %d: sandbox %s sees an earlier user's leftovers or env: %q", i, s.ID, out)
		}
		run(t, s, fmt.Sprintf(`touch /tmp/marker-%d; (exec -a marker-sleeper sleep 600 &)`, i), sdk.RunOptions{})
		if err := s.Kill(opCtx(t)); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(srv.Log(), "pooled=true") {
		t.Fatal("no create was served from the warm pool: the test proves nothing")
	}
}

// Killing sandboxes while the pool refills loses nothing: every kill is
// recorded, no container outlives its sandbox except ready pool members,
// and the pool keeps serving.
func TestPoolKillDuringRefill(t *testing.T) {
	srv := StartServer(t, "--pool", "base=2:4", "--pool", "code-interpreter=0")
	c := srv.Client(t)
	for round := range 3 {
		var wg sync.WaitGroup
		ids := make(chan string, 6)
		for range 6 { // more than the pool holds: refills run while we kill
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				s, err := c.Create(ctx, sdk.CreateOptions{})
				if err != nil {
					t.Errorf("round %d: create: %v", round, err)
					return
				}
				ids <- s.ID
				if err := s.Kill(ctx); err != nil {
					t.Errorf("round %d: kill %s: %v", round, s.ID, err)
				}
			}()
		}
		wg.Wait()
		close(ids)
		for id := range ids {
			createdIDs.Store(id, true)
		}
	}
	running, err := c.List(opCtx(t), sdk.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(running) != 0 {
		t.Fatalf("%d sandboxes still listed after every one was killed", len(running))
	}
	// Whatever crun still runs must be ready pool members (never a killed
	// sandbox: a kill ends its processes before it answers), and there are
	// at most the pool's maximum of them. Killed sandboxes' containers are
	// removed in the background soon after.
	for id, st := range srv.CrunStates(t) {
		if _, killed := createdIDs.Load(id); killed && st != "stopped" {
			t.Errorf("container of killed sandbox %s is %s, want stopped or gone", id, st)
		}
	}
	var ctrs []string
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		ctrs = srv.CrunContainers(t)
		left := 0
		for _, ctr := range ctrs {
			if _, killed := createdIDs.Load(ctr); killed {
				left++
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containers of killed sandboxes still there a minute after their kill: %v", ctrs)
		}
	}
	if len(ctrs) > 4 {
		t.Errorf("%d containers run, more than the pool's maximum of 4: %v", len(ctrs), ctrs)
	}
	s := create(t, c, sdk.CreateOptions{})
	if out := run(t, s, "echo alive", sdk.RunOptions{}).Stdout; out != "alive\n" {
		t.Fatalf("after the churn a new sandbox answered %q", out)
	}
}

// Templates without a pool of their own get one from their first sandbox on
// (--pool '*=MIN:MAX'), so the next create is served from it; a template
// whose pool is turned off (base=0:0) never gets one, auto pool or not.
func TestPoolForAnyTemplate(t *testing.T) {
	srv := StartServer(t, "--pool", "base=0:0", "--pool", "code-interpreter=0", "--pool", "*=0:2")
	c := srv.Client(t)
	churn := func(t *testing.T, template string) bool {
		before := strings.Count(srv.Log(), "pooled=true")
		s := create(t, c, sdk.CreateOptions{Template: template})
		if err := s.Kill(opCtx(t)); err != nil {
			t.Fatal(err)
		}
		return strings.Count(srv.Log(), "pooled=true") > before
	}
	t.Run("turned off", func(t *testing.T) {
		// Before the fix the auto pool took base over at its first create
		// and served the second one already.
		for i := 0; i < 6; i++ {
			if churn(t, "base") {
				t.Fatalf("create %d from base was served from a pool; --pool base=0:0 must turn it off", i+1)
			}
			time.Sleep(300 * time.Millisecond)
		}
	})
	t.Run("any other template", func(t *testing.T) {
		if _, err := c.BuildTemplate(opCtx(t), sdk.TemplateBuildOptions{Name: "any-pool",
			Steps: []sdk.TemplateStep{{Type: "RUN", Args: []string{"echo pooled > /opt/any.txt", "root"}}}}); err != nil {
			t.Fatal(err)
		}
		churn(t, "any-pool")
		deadline := time.Now().Add(time.Minute)
		for !churn(t, "any-pool") {
			if time.Now().After(deadline) {
				t.Fatal("no create was served from the on-demand pool within a minute")
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}

// Servers inside a sandbox are reachable through the proxy whether they
// listen on all interfaces (reached directly on the bridge) or on loopback
// only (reached through the agent's forwarder), and a sandbox without
// outbound network is reached through the agent too.
func TestProxyReachesServersOnEveryBind(t *testing.T) {
	srv := StartServer(t, "--pool", "base=0", "--pool", "code-interpreter=0")
	c := srv.Client(t)
	noNet := false
	for _, tc := range []struct {
		name string
		opts sdk.CreateOptions
		bind string
	}{
		{"all interfaces", sdk.CreateOptions{}, "0.0.0.0"},
		{"loopback only", sdk.CreateOptions{}, "127.0.0.1"},
		{"no outbound network", sdk.CreateOptions{AllowInternetAccess: &noNet}, "0.0.0.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := create(t, c, tc.opts)
			h, err := s.Commands.Start(opCtx(t), "mkdir -p /tmp/www && echo hello-"+tc.bind+" > /tmp/www/index.html && cd /tmp/www && exec python3 -m http.server 8001 --bind "+tc.bind, sdk.RunOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Kill(opCtx(t))
			deadline := time.Now().Add(30 * time.Second)
			for {
				r := srv.Raw(t, "GET", "/index.html", "", map[string]string{"E2b-Sandbox-Id": s.ID, "E2b-Sandbox-Port": "8001"})
				if r.Status == 200 {
					if strings.TrimSpace(r.Body) != "hello-"+tc.bind {
						t.Fatalf("body %q", r.Body)
					}
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("server bound to %s never reachable: %d %s", tc.bind, r.Status, r.Body)
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}

// --pool '*=0:0' turns every pool off, base's included: before the fix
// base's built-in default outranked the operator's *, and creates from
// base were served from a pool it kept refilling.
func TestPoolAnyOffTurnsEveryPoolOff(t *testing.T) {
	srv := StartServer(t, "--pool", "*=0:0")
	c := srv.Client(t)
	for i := 0; i < 3; i++ {
		s := create(t, c, sdk.CreateOptions{})
		if err := s.Kill(opCtx(t)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond) // a pool would refill meanwhile
	}
	if n := strings.Count(srv.Log(), "pooled=true"); n > 0 {
		t.Errorf("%d creates from base were served from a pool; --pool '*=0:0' must turn every pool off", n)
	}
}
