package sandbox

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
)

type fakeCaps map[string]*int

func (f fakeCaps) Team(_ context.Context, id string) (store.Team, error) {
	max, ok := f[id]
	if !ok {
		return store.Team{}, errdefs.NotFound("team %s not found", id)
	}
	return store.Team{ID: id, MaxSandboxes: max}, nil
}

func TestQuotaConcurrentReservations(t *testing.T) {
	t.Parallel()
	q := &quota{def: 5, teams: fakeCaps{"a": nil}}
	var ok, refused atomic.Int32
	var wg sync.WaitGroup
	var mu sync.Mutex
	var held []*reservation
	for range 50 {
		wg.Go(func() {
			r, err := q.reserve(t.Context(), "a", 0)
			if err != nil {
				if !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), "may have 5") {
					t.Errorf("refusal %v: want resource exhausted naming the limit", err)
				}
				refused.Add(1)
				return
			}
			ok.Add(1)
			mu.Lock()
			held = append(held, r)
			mu.Unlock()
		})
	}
	wg.Wait()
	if ok.Load() != 5 || refused.Load() != 45 {
		t.Fatalf("50 concurrent reservations under a cap of 5: %d ok, %d refused", ok.Load(), refused.Load())
	}
	// Two become sandboxes (tracked, then their reservations released),
	// three fail: five slots are held, then two.
	q.tracked("a")
	q.tracked("a")
	for _, r := range held {
		r.release()
		r.release() // idempotent
	}
	for range 3 {
		if _, err := q.reserve(t.Context(), "a", 0); err != nil {
			t.Fatalf("reserve with 2 of 5 live: %v", err)
		}
	}
	if _, err := q.reserve(t.Context(), "a", 0); err == nil {
		t.Fatal("a sixth slot was granted")
	}
	q.untracked("a")
	if _, err := q.reserve(t.Context(), "a", 0); err != nil {
		t.Fatalf("reserve after a kill: %v", err)
	}
}

func TestQuotaPerTeam(t *testing.T) {
	t.Parallel()
	one, none := 1, 0
	q := &quota{def: 2, teams: fakeCaps{"small": &one, "free": &none, "default": nil}}
	for team, want := range map[string]int{"small": 1, "free": 100, "default": 2} {
		got := 0
		for range 100 {
			if _, err := q.reserve(t.Context(), team, 0); err != nil {
				break
			}
			got++
		}
		if got != want {
			t.Errorf("team %s got %d slots, want %d", team, got, want)
		}
	}
	if _, err := q.reserve(t.Context(), "missing", 0); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a team that does not exist: %v", err)
	}
	unlimited := &quota{}
	for range 1000 {
		if _, err := unlimited.reserve(t.Context(), "x", 0); err != nil {
			t.Fatalf("no cap: %v", err)
		}
	}
}
