package sqldb

import (
	"context"
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
