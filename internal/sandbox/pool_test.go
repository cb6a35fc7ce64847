package sandbox

import (
	"context"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The fill loop's decisions: refill at once below the minimum (a tight
// create/kill loop), several starts at a time, growth above the minimum
// only while no cold create runs, back-off after a failed start.
func TestPoolNext(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type state struct {
		ready, inflight, claims int
		retryAt                 time.Duration // from t0; 0 = none
	}
	tests := []struct {
		name string
		size PoolSize
		st   state
		cold int
		want refillStep
	}{
		{"empty pool starts", PoolSize{Min: 2, Max: 16}, state{}, 0, stepStart},
		{"below the minimum it refills even during cold creates", PoolSize{Min: 2, Max: 16}, state{ready: 1}, 3, stepStart},
		{"several starts at once", PoolSize{Min: 4, Max: 16}, state{inflight: 1}, 0, stepStart},
		{"no more than refillConcurrency", PoolSize{Min: 8, Max: 16}, state{inflight: 2}, 0, stepIdle},
		{"full at the minimum", PoolSize{Min: 2, Max: 16}, state{ready: 2}, 0, stepIdle},
		{"in-flight starts count", PoolSize{Min: 2, Max: 16}, state{ready: 1, inflight: 1}, 0, stepIdle},
		{"demand grows it", PoolSize{Min: 2, Max: 16}, state{ready: 2, claims: 6}, 0, stepStart},
		{"growth waits for cold creates", PoolSize{Min: 2, Max: 16}, state{ready: 2, claims: 6}, 1, stepWait},
		{"demand fell: shrink", PoolSize{Min: 0, Max: 4}, state{ready: 3}, 0, stepShrink},
		{"back-off after a failure", PoolSize{Min: 2, Max: 16}, state{retryAt: time.Second}, 0, stepWait},
		{"back-off over", PoolSize{Min: 2, Max: 16}, state{retryAt: -time.Second}, 0, stepStart},
	}
	defer func(c int) { refillConcurrency = c }(refillConcurrency)
	refillConcurrency = 2 // whatever this machine's CPUs
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPool(tt.size)
			for range tt.st.ready {
				p.ready <- &live{}
			}
			for range tt.st.claims {
				p.noteClaim(t0)
			}
			p.inflight = tt.st.inflight
			if tt.st.retryAt != 0 {
				p.retryAt = t0.Add(tt.st.retryAt)
			}
			if got, _ := p.next(t0, tt.cold); got != tt.want {
				t.Fatalf("next = %v, want %v", got, tt.want)
			}
		})
	}
}

// Failed starts back off exponentially, up to a minute; a success resets.
func TestPoolStartBackoff(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := newPool(PoolSize{Min: 1, Max: 1})
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}
	for _, w := range want {
		p.inflight = 1
		p.startDone(t0, true)
		if got := p.retryAt.Sub(t0); got != w {
			t.Fatalf("retry after %v, want %v", got, w)
		}
	}
	for range 10 {
		p.inflight = 1
		p.startDone(t0, true)
	}
	if got := p.retryAt.Sub(t0); got != time.Minute {
		t.Fatalf("retry after %v, want the 1m cap", got)
	}
	p.inflight = 1
	p.startDone(t0, false)
	if p.backoff != 0 || p.inflight != 0 {
		t.Fatalf("after a success: backoff %v, inflight %d", p.backoff, p.inflight)
	}
}

// A create finding the pool empty waits for a start in progress, but never
// more creates than starts: the others start their own at once.
func TestPoolTakeWaitsForInflight(t *testing.T) {
	p := newPool(PoolSize{Min: 1, Max: 2})
	if l := p.take(t.Context(), noRaise); l != nil {
		t.Fatal("take from an empty pool with nothing starting returned a sandbox")
	}
	p.inflight = 1
	want := &live{}
	got := make(chan *live)
	go func() { got <- p.take(t.Context(), noRaise) }()
	// Wait until that take is waiting, then a second one must not.
	for {
		p.mu.Lock()
		w := p.waiting
		p.mu.Unlock()
		if w == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if l := p.take(t.Context(), noRaise); l != nil {
		t.Fatal("a second waiter took a sandbox")
	}
	p.ready <- want
	if l := <-got; l != want {
		t.Fatalf("the waiting take got %p, want the started sandbox %p", l, want)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if l := p.take(ctx, noRaise); l != nil {
		t.Fatal("take with a cancelled context returned a sandbox")
	}
}

func noRaise(string) {}

// A start begins in the background only while the pool holds a ready
// sandbox; a create that then finds the pool empty and waits raises each
// background start once, and the start learns of it when it ends.
func TestPoolBackgroundStartsRaisedByWaiter(t *testing.T) {
	p := newPool(PoolSize{Min: 2, Max: 4})
	if p.bgStart("a") {
		t.Fatal("a start with no ready sandbox began in the background: a create may wait for it")
	}
	p.ready <- &live{}
	if !p.bgStart("b") {
		t.Fatal("a start with a ready sandbox did not begin in the background")
	}
	p.inflight = 2
	if l := p.take(t.Context(), func(id string) { t.Errorf("raised %s while a sandbox was ready", id) }); l == nil {
		t.Fatal("take with a ready sandbox returned nil")
	}
	raised := make(chan string, 4)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan *live)
	go func() { done <- p.take(ctx, func(id string) { raised <- id }) }()
	if id := <-raised; id != "b" {
		t.Fatalf("raised %q, want the background start b", id)
	}
	cancel()
	<-done
	go func() { done <- p.take(ctx, func(id string) { raised <- id }) }()
	<-done
	select {
	case id := <-raised:
		t.Fatalf("%s raised twice", id)
	default:
	}
	if !p.bgDone("b") {
		t.Fatal("the raised start was not told it was raised")
	}
	if p.bgDone("b") {
		t.Fatal("a forgotten start still reads as raised")
	}
}

// A teardown's thread runs below normal priority, and processes it starts
// inherit that; other goroutines' threads keep theirs.
func TestPoliteThread(t *testing.T) {
	got := make(chan int, 1)
	go func() {
		politeThread()
		prio, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
		if err != nil {
			t.Error(err)
		}
		got <- 20 - prio // the raw syscall returns 20 - nice
	}()
	if nice := <-got; nice != reclaimNice {
		t.Fatalf("teardown thread nice = %d, want %d", nice, reclaimNice)
	}
	prio, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
	if err != nil {
		t.Fatal(err)
	}
	if nice := 20 - prio; nice == reclaimNice {
		t.Fatalf("the process's nice is %d: politeThread changed more than its thread", nice)
	}
}
