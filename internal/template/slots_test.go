package template

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestBuildSlots(t *testing.T) {
	t.Parallel()
	b := newBuildSlots(2, 1)
	ctx := t.Context()
	var said []string
	note := func(s string) { said = append(said, s) }
	relA, err := b.acquire(ctx, "a", note)
	if err != nil {
		t.Fatal(err)
	}
	// Team a's second build waits for its first, and says why.
	got := make(chan func(), 1)
	var saidA2 string
	go func() {
		r, _ := b.acquire(ctx, "a", func(s string) { saidA2 = s })
		got <- r
	}()
	relB, err := b.acquire(ctx, "b", note) // another team still gets the second slot
	if err != nil || len(said) != 0 {
		t.Fatalf("team b: %v, told %q", err, said)
	}
	// The server is full now: team c waits, and is told so.
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := b.acquire(cctx, "c", note); err == nil {
		t.Fatal("team c got a third slot of two")
	}
	if len(said) != 1 || !strings.Contains(said[0], "--build-concurrency)") {
		t.Errorf("team c was told %q", said)
	}
	select {
	case <-got:
		t.Fatal("team a's second build started beside its first")
	case <-time.After(20 * time.Millisecond):
	}
	relA()
	select {
	case r := <-got:
		r()
	case <-time.After(time.Second):
		t.Fatal("team a's second build did not start when its first finished")
	}
	if !strings.Contains(saidA2, "--build-concurrency-per-team") {
		t.Errorf("team a's second build was told %q", saidA2)
	}
	relB()
	if b.running != 0 || len(b.byTeam) != 0 {
		t.Errorf("after release: %d running, %v", b.running, b.byTeam)
	}
}
