package placement

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// TestConcurrentPlacementsNeverOvercommit runs many decisions at once
// against nodes with room for exactly capacity sandboxes: exactly that
// many succeed, no node takes more than it has, and the rest get a
// resource-exhausted error. Run it with -race.
func TestConcurrentPlacementsNeverOvercommit(t *testing.T) {
	t.Parallel()
	const nodes, perNode, workers, each = 10, 8, 8, 25 // 200 attempts for 80 places
	var ns []Node
	for i := range nodes {
		ns = append(ns, node(fmt.Sprintf("n%d", i), perNode*1000, perNode*1024))
	}
	p, _ := placer(t, Config{K: 2}, ns...)

	var (
		mu        sync.Mutex
		placed    = map[string]int{}
		exhausted int
		held      []*Reservation
		wg        sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for range each {
				d, err := p.Place(t.Context(), req())
				mu.Lock()
				switch {
				case err == nil:
					placed[d.NodeID]++
					held = append(held, d.Reservation)
				case errors.Is(err, errdefs.ErrResourceExhausted):
					exhausted++
				default:
					t.Errorf("Place: %v", err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	total := 0
	for id, c := range placed {
		total += c
		if c > perNode {
			t.Errorf("node %s took %d sandboxes, room for %d", id, c, perNode)
		}
	}
	if total != nodes*perNode || exhausted != workers*each-total {
		t.Fatalf("placed %d, exhausted %d; want %d placed and %d exhausted", total, exhausted, nodes*perNode, workers*each-nodes*perNode)
	}

	// Releasing concurrently (the nodes carry no observed time, so a
	// release frees at once) makes all the room usable again.
	for _, r := range held {
		wg.Go(r.Release)
	}
	wg.Wait()
	for range nodes * perNode {
		if _, err := p.Place(t.Context(), req()); err != nil {
			t.Fatalf("after releasing everything: %v", err)
		}
	}
}
