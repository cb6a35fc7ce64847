package sqldb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"time"

	"github.com/jackc/pgx/v5"
)

// Notify queues a notification on channel, sent to every listening server
// when tx commits (and never if it rolls back). A no-op on SQLite, where
// one process owns the database and wakes its readers itself.
func (t *Tx) Notify(ctx context.Context, channel string) error {
	if t.d.dialect != Postgres {
		return nil
	}
	_, err := t.tx.ExecContext(ctx, `SELECT pg_notify($1, '')`, channel)
	return err
}

// Listen calls fn after every notification on channel, from this server or
// another sharing the database, until ctx ends. It holds a connection of its
// own; after (re)connecting it calls fn once too, since notifications sent
// while it was away are lost. On SQLite it returns at once.
func (d *DB) Listen(ctx context.Context, channel string, fn func()) error {
	if d.dialect != Postgres {
		return nil
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := d.listenOnce(ctx, channel, fn, func() { backoff = 100 * time.Millisecond })
		if ctx.Err() != nil {
			break
		}
		d.log.Warn("database notifications interrupted; reconnecting", "channel", channel, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
	return nil
}

func (d *DB) listenOnce(ctx context.Context, channel string, fn, connected func()) error {
	conn, err := pgx.Connect(ctx, d.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return err
	}
	connected()
	fn()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		fn()
	}
}

// Notify sends a notification on channel outside a transaction (see
// Tx.Notify). A no-op on SQLite.
func (d *DB) Notify(ctx context.Context, channel string) error {
	if d.dialect != Postgres {
		return nil
	}
	_, err := d.db.ExecContext(ctx, `SELECT pg_notify($1, '')`, channel)
	return err
}

// Lock is a lock held by one server among those sharing a database, for
// work exactly one of them must do at a time.
type Lock struct {
	conn *sql.Conn // PostgreSQL: the session holding the advisory lock
}

// TryLock takes the lock named key if no server holds it. On PostgreSQL
// it is a session advisory lock on a connection of its own: it is released
// when the holder releases it or dies (its connection closes), and another
// server's TryLock then succeeds. On SQLite, which one server owns, it
// always succeeds.
func (d *DB) TryLock(ctx context.Context, key int64) (*Lock, bool, error) {
	if d.dialect != Postgres {
		return &Lock{}, true, nil
	}
	conn, err := d.db.Conn(ctx)
	if err != nil {
		return nil, false, err
	}
	var ok bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil || !ok {
		conn.Close()
		return nil, false, err
	}
	return &Lock{conn: conn}, true, nil
}

// Held reports whether the lock is still held: false once its session is
// gone (the database restarted, the connection broke).
func (l *Lock) Held(ctx context.Context) bool {
	if l.conn == nil {
		return true
	}
	return l.conn.PingContext(ctx) == nil
}

// Release gives the lock up.
func (l *Lock) Release() {
	if l.conn == nil {
		return
	}
	// Closing returns the connection to the pool with the lock still held:
	// unlock first, and discard the connection if that fails.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := l.conn.ExecContext(ctx, `SELECT pg_advisory_unlock_all()`); err != nil {
		l.conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	l.conn.Close()
}
