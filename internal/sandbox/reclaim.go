package sandbox

import (
	"context"
	goruntime "runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// A kill answers once the sandbox is recorded killed and nothing runs in it
// any more (runtime.Stopper: one signal to its init). What is left — the
// runtime's delete (an exec of crun, ~10-30 ms), unmounting its root
// filesystem, its network namespace and run dir — is reclaimed in the
// background, a few sandboxes at a time, instead of on the caller's
// request: a create/kill loop then pays for its creates only. Until then
// the sandbox's memory is already free (its processes are dead) and its
// team slot released; its address and uid range are released by the
// reclaim itself, so nothing is handed out twice. Close waits for every
// reclaim; a server that dies first leaves orphans, which Recover removes
// at the next start, as after any crash.

// reclaimConcurrency bounds the teardowns running at once: killing a
// thousand sandboxes must not fork a thousand crun processes together.
const reclaimConcurrency = 4

// reclaimTimeout bounds one background teardown.
const reclaimTimeout = 2 * time.Minute

// reclaimIdle is how long a teardown worker waits for more work before it
// ends (and its niced thread with it): a create/kill loop keeps the same
// few threads, where a thread per kill cost a clone and an exit each.
const reclaimIdle = time.Second

type reclaimer struct {
	mu      sync.Mutex
	queue   []string
	workers int
	wake    chan struct{} // unbuffered: a send reaches a waiting worker or fails
	wg      sync.WaitGroup
}

// reclaim tears down a stopped sandbox in the background.
func (m *Manager) reclaim(id string) { m.reclaims.add(id, m.destroy) }

// add queues id for teardown by destroy on one of the workers.
func (r *reclaimer) add(id string, destroy func(context.Context, string)) {
	r.wg.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.wake == nil {
		r.wake = make(chan struct{})
	}
	r.queue = append(r.queue, id)
	select {
	case r.wake <- struct{}{}: // a worker waiting for work takes it
		return
	default:
	}
	// Every worker is busy (each takes the next one from the queue when
	// it is done) or between its look at the queue and its wait, in which
	// case it finds this one after reclaimIdle at the latest.
	if r.workers < reclaimConcurrency {
		r.workers++
		go r.work(destroy)
	}
}

// work tears down queued sandboxes on a niced thread of its own until the
// queue stays empty for reclaimIdle.
func (r *reclaimer) work(destroy func(context.Context, string)) {
	politeThread()
	for {
		r.mu.Lock()
		if len(r.queue) == 0 {
			r.mu.Unlock()
			select {
			case <-r.wake:
				continue
			case <-time.After(reclaimIdle):
			}
			r.mu.Lock()
			if len(r.queue) == 0 {
				r.workers--
				r.mu.Unlock()
				return // the runtime ends the locked thread with it
			}
		}
		id := r.queue[0]
		r.queue[0] = ""
		r.queue = r.queue[1:]
		r.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), reclaimTimeout)
		destroy(ctx, id)
		cancel()
		r.wg.Done()
	}
}

// reclaimNice is the scheduling priority of teardowns: below the creates
// and commands users wait for, which on a busy host would otherwise share
// the CPU with them (a teardown is an exec of crun, an unmount and a
// namespace's removal: ~10 ms of CPU nobody waits for).
const reclaimNice = 10

// politeThread lowers the priority of the calling goroutine's OS thread,
// which it keeps for good: Linux sets nice per thread, a process forked
// from it (crun delete) inherits it, and the runtime ends a locked thread
// when its goroutine returns, so no other goroutine ever runs on it.
func politeThread() {
	goruntime.LockOSThread()
	_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), reclaimNice)
}

// WaitReclaimed blocks until every teardown started by a kill so far has
// finished (Close calls it; tests use it to look at what a kill left).
func (m *Manager) WaitReclaimed() { m.reclaims.wg.Wait() }
