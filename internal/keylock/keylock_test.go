package keylock

import (
	"fmt"
	"sync"
	"testing"
)

func TestLocks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		keys   int
		perKey int
	}{
		{"one key, many holders", 1, 200},
		{"many keys, one holder each", 500, 1},
		{"many keys, many holders", 50, 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var l Locks
			counts := make([]int, tt.keys) // unsynchronized: only the key's lock guards it
			var wg sync.WaitGroup
			for k := range tt.keys {
				for range tt.perKey {
					wg.Go(func() {
						unlock := l.Lock(fmt.Sprint("key-", k))
						counts[k]++
						unlock()
					})
				}
			}
			wg.Wait()
			for k, c := range counts {
				if c != tt.perKey {
					t.Fatalf("key %d counted %d, want %d", k, c, tt.perKey)
				}
			}
			if n := l.Len(); n != 0 {
				t.Fatalf("%d keys still held after every unlock; the map must shrink", n)
			}
		})
	}
}

// TestLocksExclude: a second Lock of a key waits for the first's unlock;
// another key does not.
func TestLocksExclude(t *testing.T) {
	t.Parallel()
	var l Locks
	unlock := l.Lock("a")
	got := make(chan string, 2)
	go func() { u := l.Lock("a"); got <- "a"; u() }()
	go func() { u := l.Lock("b"); got <- "b"; u() }()
	if k := <-got; k != "b" {
		t.Fatalf("%s got its lock first, want b (a is held)", k)
	}
	unlock()
	if k := <-got; k != "a" {
		t.Fatalf("got %s, want a after its unlock", k)
	}
}
