package sqldb

import (
	"container/list"
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

// maxStmts bounds the cache. Past it the least recently used statement is
// evicted, so statements built at run time (an IN list of any length)
// cannot keep the ones run at every request out once it has filled.
const maxStmts = 512

type stmtCache struct {
	mu    sync.Mutex
	max   int // 0: maxStmts
	stmts map[string]*cachedStmt
	lru   list.List // of *cachedStmt, most recently used at the front
}

// cachedStmt is a statement of the cache and who is running it. A caller
// holds a reference from the lookup until its Exec or Query call returns:
// an *sql.Stmt closed in between would fail that call ("statement is
// closed"), so an evicted statement is closed by its last user. Rows and
// transactions that outlive the call keep what they use open themselves
// (database/sql counts them as the statement's dependants).
type cachedStmt struct {
	s       *sql.Stmt
	q       string
	elem    *list.Element
	refs    int
	evicted bool
}

// stmt returns the prepared statement for q (already rebound), referenced
// until release, or nil when the caller should run q as it is: PostgreSQL,
// or a statement that does not prepare (its error then comes from running
// it).
func (d *DB) stmt(ctx context.Context, q string) *cachedStmt {
	if d.dialect != SQLite {
		return nil
	}
	c := &d.stmts
	c.mu.Lock()
	defer c.mu.Unlock()
	if cs, ok := c.stmts[q]; ok {
		c.lru.MoveToFront(cs.elem)
		cs.refs++
		return cs
	}
	if c.stmts == nil {
		c.stmts = make(map[string]*cachedStmt)
	}
	// Prepared apart from the caller's context: the statement outlives
	// the call that first ran it.
	s, err := d.db.PrepareContext(context.WithoutCancel(ctx), q)
	if err != nil {
		return nil
	}
	max := c.max
	if max <= 0 {
		max = maxStmts
	}
	for c.lru.Len() >= max {
		c.evict(c.lru.Back().Value.(*cachedStmt))
	}
	cs := &cachedStmt{s: s, q: q, refs: 1}
	cs.elem = c.lru.PushFront(cs)
	c.stmts[q] = cs
	return cs
}

// evict drops cs from the cache, closing it now if nobody runs it, else at
// its last release. c.mu is held.
func (c *stmtCache) evict(cs *cachedStmt) {
	c.lru.Remove(cs.elem)
	delete(c.stmts, cs.q)
	cs.evicted = true
	if cs.refs == 0 {
		_ = cs.s.Close()
	}
}

// release ends a use of cs begun by DB.stmt.
func (d *DB) release(cs *cachedStmt) {
	c := &d.stmts
	c.mu.Lock()
	defer c.mu.Unlock()
	if cs.refs--; cs.refs == 0 && cs.evicted {
		_ = cs.s.Close()
	}
}

// closeStmts releases the cached statements (at Close, when nothing runs).
func (d *DB) closeStmts() {
	c := &d.stmts
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.lru.Len() > 0 {
		cs := c.lru.Back().Value.(*cachedStmt)
		cs.refs = 0
		c.evict(cs)
	}
}
