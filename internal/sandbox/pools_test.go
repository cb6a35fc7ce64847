package sandbox

import (
	"context"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/store"
)

// A create takes the pool's ready sandbox (its agent gets a second /init,
// with the caller's env and token), the pool refills, and Close removes
// the pooled sandboxes, which belong to nobody.
func TestPoolsClaimRefillClose(t *testing.T) {
	t.Parallel()
	e := newLifecycle(t, nil)
	ctx, stop := context.WithCancel(t.Context())
	e.m.StartPools(ctx, map[string]PoolSize{"base": {Min: 1, Max: 1}})
	ps := e.m.pools.(*Pools)
	ready := func() int {
		ps.mu.Lock()
		p := ps.pools["base"]
		ps.mu.Unlock()
		if p == nil {
			return 0
		}
		return len(p.ready)
	}
	waitFor(t, "a pooled sandbox", func() bool { return ready() == 1 })
	var pooled string
	e.agents.mu.Lock()
	for id := range e.agents.byID {
		pooled = id
	}
	e.agents.mu.Unlock()

	sb, err := e.m.Create(t.Context(), CreateRequest{TeamID: "t1", Template: "base", Secure: true, AllowInternet: true,
		EnvVars: map[string]string{"MINE": "x"}, Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if sb.ID != pooled {
		t.Fatalf("created %s; want the pooled %s", sb.ID, pooled)
	}
	a := e.agents.of(sb.ID)
	if len(a.inits) != 2 || a.inits[1].EnvVars["MINE"] != "x" || a.inits[1].AccessToken != sb.AccessToken {
		t.Fatalf("inits %+v; want the pool's, then the caller's env and token", a.inits)
	}
	if got := e.stored(t, sb.ID); got.TeamID != "t1" || got.State != store.StateRunning {
		t.Fatalf("stored %+v; want running for t1", got)
	}
	waitFor(t, "the refill", func() bool { return ready() == 1 })
	// The heartbeat reports it by template ID, once (the pool is keyed by
	// its configured name and by ID).
	if got := e.m.PooledReady(); len(got) != 1 || got[sb.TemplateID] != 1 {
		t.Errorf("PooledReady = %v; want {%s: 1}", got, sb.TemplateID)
	}
	e.agents.mu.Lock()
	var refill string
	for id := range e.agents.byID {
		if id != pooled {
			refill = id
		}
	}
	e.agents.mu.Unlock()

	stop()
	e.m.Close(context.WithoutCancel(t.Context()))
	if n := e.drv.deleted(refill); n != 1 {
		t.Errorf("pooled sandbox %s deleted %d times at Close; want once", refill, n)
	}
	if n := e.drv.deleted(sb.ID); n != 0 {
		t.Errorf("the claimed sandbox was deleted at Close (%d); it keeps running", n)
	}
}
