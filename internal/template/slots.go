package template

import (
	"context"
	"fmt"
	"sync"
)

// buildSlots caps the builds running at once, on the server and per team,
// so that builds cannot exhaust the host and one team's builds cannot keep
// every other team's waiting. A build waiting for a slot says so in its
// log; waiting builds start in no particular order.
type buildSlots struct {
	max, perTeam int

	mu      sync.Mutex
	running int
	byTeam  map[string]int
	freed   chan struct{} // closed (and replaced) whenever a slot frees
}

func newBuildSlots(max, perTeam int) *buildSlots {
	if perTeam <= 0 || perTeam > max {
		perTeam = max
	}
	return &buildSlots{max: max, perTeam: perTeam, byTeam: map[string]int{}, freed: make(chan struct{})}
}

// acquire waits for a slot of team; queued is told once why it waits.
func (b *buildSlots) acquire(ctx context.Context, team string, queued func(string)) (release func(), err error) {
	told := false
	for {
		b.mu.Lock()
		if b.running < b.max && b.byTeam[team] < b.perTeam {
			b.running++
			b.byTeam[team]++
			b.mu.Unlock()
			return func() { b.release(team) }, nil
		}
		why := fmt.Sprintf("queued: %d builds are running on this server, at most %d at once (sbx serve --build-concurrency); this build starts when one finishes",
			b.running, b.max)
		if b.byTeam[team] >= b.perTeam {
			why = fmt.Sprintf("queued: your team has %d builds running, at most %d at once (sbx serve --build-concurrency-per-team); this build starts when one finishes",
				b.byTeam[team], b.perTeam)
		}
		freed := b.freed
		b.mu.Unlock()
		if !told {
			queued(why)
			told = true
		}
		select {
		case <-freed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (b *buildSlots) release(team string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.running--
	if b.byTeam[team]--; b.byTeam[team] <= 0 {
		delete(b.byTeam, team)
	}
	close(b.freed)
	b.freed = make(chan struct{})
}
