// Package keylock serializes work per key (a template name, a layer's
// destination) without holding a lock per key forever: a key's lock
// exists only while someone holds or waits for it, so a process that
// sees millions of keys over its life keeps only the ones in use.
package keylock

import "sync"

// Locks is a set of mutexes by key. The zero value is ready to use; a
// Locks must not be copied after first use.
type Locks struct {
	mu    sync.Mutex
	locks map[string]*entry
}

type entry struct {
	mu   sync.Mutex
	refs int // holders and waiters
}

// Lock blocks until key is free, then holds it until unlock is called
// (once).
func (l *Locks) Lock(key string) (unlock func()) {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*entry{}
	}
	e := l.locks[key]
	if e == nil {
		e = &entry{}
		l.locks[key] = e
	}
	e.refs++
	l.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		l.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(l.locks, key)
		}
		l.mu.Unlock()
	}
}

// Len is how many keys are held or waited for.
func (l *Locks) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.locks)
}
