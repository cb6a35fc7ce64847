package sqldb

import (
	"context"
	"database/sql"
	"sync"
)

// Prepared statements, kept by query text (SQLite only). Otherwise SQLite
// parses and plans every statement at every call: sqlite3_prepare was
// 6% of the server's CPU in a create → echo → kill loop, where each
// create and kill runs a handful of the same statements. A cached
// *sql.Stmt is prepared once on each connection that runs it, inside
// transactions too (Tx.StmtContext reuses the connection's). pgx keeps
// its own cache of prepared statements for PostgreSQL.

// maxStmts bounds the cache: statements built at run time (an IN list of
// any length) beyond it run unprepared, as before.
const maxStmts = 512

type stmtCache struct {
	mu    sync.RWMutex
	stmts map[string]*sql.Stmt
}

// stmt returns the prepared statement for q (already rebound), or nil
// when the caller should run q as it is: PostgreSQL, a full cache, or a
// statement that does not prepare (its error then comes from running it).
func (d *DB) stmt(ctx context.Context, q string) *sql.Stmt {
	if d.dialect != SQLite {
		return nil
	}
	c := &d.stmts
	c.mu.RLock()
	s, ok := c.stmts[q]
	c.mu.RUnlock()
	if ok {
		return s
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.stmts[q]; ok {
		return s
	}
	if c.stmts == nil {
		c.stmts = make(map[string]*sql.Stmt)
	}
	if len(c.stmts) >= maxStmts {
		return nil
	}
	// Prepared apart from the caller's context: the statement outlives
	// the call that first ran it.
	s, err := d.db.PrepareContext(context.WithoutCancel(ctx), q)
	if err != nil {
		return nil
	}
	c.stmts[q] = s
	return s
}

// closeStmts releases the cached statements (at Close).
func (d *DB) closeStmts() {
	c := &d.stmts
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.stmts {
		_ = s.Close()
	}
	c.stmts = nil
}
