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
	// sandbox), and there are at most the pool's maximum of them.
	ctrs := srv.CrunContainers(t)
	for _, ctr := range ctrs {
		if _, killed := createdIDs.Load(ctr); killed {
			t.Errorf("container of killed sandbox %s still runs", ctr)
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
// (--pool '*=MIN:MAX'), so the next create is served from it.
func TestPoolForAnyTemplate(t *testing.T) {
	srv := StartServer(t, "--pool", "base=0", "--pool", "code-interpreter=0", "--pool", "*=0:2")
	c := srv.Client(t)
	first := create(t, c, sdk.CreateOptions{})
	if err := first.Kill(opCtx(t)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		s := create(t, c, sdk.CreateOptions{})
		if err := s.Kill(opCtx(t)); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(srv.Log(), "pooled=true") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no create was served from the on-demand pool within a minute")
		}
		time.Sleep(200 * time.Millisecond)
	}
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
