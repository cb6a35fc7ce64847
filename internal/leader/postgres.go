package leader

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/sbxdev/sbx/internal/store/sqldb"
)

// Postgres elects among servers sharing a PostgreSQL database with a
// session advisory lock (sqldb.TryLock). The database drops the lock when
// the holder's connection closes, as it does when the holder dies, so a
// successor takes over within one RetryPeriod; a holder that cannot reach
// the database within RenewDeadline stops leading before anyone else can
// take the lock (the server keeps the session, and so the lock, at least
// until then).
type Postgres struct {
	DB     *sqldb.DB
	Timing Timing
	Log    *slog.Logger
}

// lockKey is the advisory lock key for name, in a range of its own ("sbxL"
// in the high bits) so it does not meet the keys other parts of sbx lock.
func lockKey(name string) int64 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return int64(0x7362784c)<<32 | int64(h.Sum32())
}

// Campaign runs lead each time this server holds the lock for name, until
// ctx ends.
func (p *Postgres) Campaign(ctx context.Context, name string, lead Lead) error {
	if err := checkName(name); err != nil {
		return err
	}
	if p.DB.Dialect() != sqldb.Postgres {
		return fmt.Errorf("leader %s: the PostgreSQL elector needs a PostgreSQL database (use File on one machine)", name)
	}
	t := p.Timing.orDefault()
	for {
		lock, ok, err := p.DB.TryLock(ctx, lockKey(name))
		if err != nil && ctx.Err() == nil && p.Log != nil {
			p.Log.Warn("leader campaign: the database did not answer; trying again", "leader.name", name, "err", err)
		}
		if ok && p.settle(ctx, t, lock) {
			logf(p.Log, "leading", name)
			p.hold(ctx, name, t, lock, lead)
			logf(p.Log, "stopped leading", name)
		}
		if ok {
			lock.Release()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(t.RetryPeriod):
		}
	}
}

// settle waits LeaseDuration after the lock is taken, checking that it is
// still held. The database frees a lock the moment its holder's session
// ends, but the holder learns of it only at its next check (within
// RetryPeriod + RenewDeadline, which LeaseDuration exceeds): a successor
// that started at once would lead beside it (TestPostgresElectorSessionLost
// saw a 21 ms overlap without this).
func (p *Postgres) settle(ctx context.Context, t Timing, lock *sqldb.Lock) bool {
	deadline := time.Now().Add(t.LeaseDuration)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(min(t.RetryPeriod, time.Until(deadline))):
		}
		pingCtx, cancel := context.WithTimeout(ctx, t.RenewDeadline)
		held := lock.Held(pingCtx)
		cancel()
		if !held {
			return false
		}
	}
	return true
}

// hold runs lead while the lock's session answers within RenewDeadline.
func (p *Postgres) hold(ctx context.Context, name string, t Timing, lock *sqldb.Lock, lead Lead) {
	leadCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); lead(leadCtx) }()
	tick := time.NewTicker(t.RetryPeriod)
	defer tick.Stop()
	for {
		select {
		case <-done:
			stop()
			return
		case <-tick.C:
			pingCtx, cancel := context.WithTimeout(ctx, t.RenewDeadline)
			held := lock.Held(pingCtx)
			cancel()
			if !held {
				if p.Log != nil && ctx.Err() == nil {
					p.Log.Warn("leadership lost: the database session holding the lock did not answer", "leader.name", name)
				}
				stop()
				<-done
				return
			}
		}
	}
}
