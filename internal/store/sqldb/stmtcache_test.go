package sqldb

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// Statements run through the cache behave as unprepared ones: in and out
// of transactions, after the schema changed under them, scripts of
// several statements, and beyond the cache's bound.
func TestStatementCache(t *testing.T) {
	t.Parallel()
	db, err := Open(t.Context(), filepath.Join(t.TempDir(), "c.db"), Options{NoMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := t.Context()
	// A script: every statement of it runs.
	if _, err := db.ExecContext(ctx, `CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER); CREATE TABLE other (x INTEGER)`); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := db.ExecContext(ctx, `INSERT INTO kv (k, v) VALUES (?, ?)`, fmt.Sprint("k", i), i); err != nil {
			t.Fatal(err)
		}
	}
	err = db.InTx(ctx, func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO kv (k, v) VALUES (?, ?)`, "tx", 10); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM kv`).Scan(&n); err != nil || n != 4 {
			return fmt.Errorf("count in tx = %d, %v; want 4", n, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A rolled-back write through a cached statement is undone.
	_ = db.InTx(ctx, func(tx *Tx) error {
		_, _ = tx.ExecContext(ctx, `INSERT INTO kv (k, v) VALUES (?, ?)`, "gone", 1)
		return fmt.Errorf("roll back")
	})
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM kv`).Scan(&n); err != nil || n != 4 {
		t.Fatalf("count = %d, %v; want 4", n, err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE x (y INTEGER)`); err != nil {
		t.Fatal(err)
	}
	columns := func() []string {
		t.Helper()
		rows, err := db.QueryContext(ctx, `SELECT * FROM other`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		cols, _ := rows.Columns()
		return cols
	}
	if cols := columns(); len(cols) != 1 {
		t.Errorf("SELECT * before ALTER TABLE: columns %q, want x", cols)
	}
	if _, err := db.ExecContext(ctx, `ALTER TABLE other ADD COLUMN z INTEGER DEFAULT 7`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO other (x) VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	if cols := columns(); len(cols) != 2 {
		t.Errorf("SELECT * after ALTER TABLE: columns %q, want x and z", cols)
	}
	db.stmts.mu.Lock()
	cached := len(db.stmts.stmts)
	db.stmts.mu.Unlock()
	if want := 7; cached != want { // one per distinct statement text
		t.Errorf("%d cached statements, want %d", cached, want)
	}
	// Past the bound, statements still run.
	for i := range maxStmts + 10 {
		if err := db.QueryRowContext(ctx, fmt.Sprintf(`SELECT %d`, i)).Scan(&n); err != nil || n != i {
			t.Fatalf("SELECT %d = %d, %v", i, n, err)
		}
	}
	db.stmts.mu.Lock()
	cached = len(db.stmts.stmts)
	db.stmts.mu.Unlock()
	if cached > maxStmts {
		t.Errorf("%d cached statements, bound %d", cached, maxStmts)
	}
}

// The cache keeps the statements used last: a hit moves a statement to the
// front, and a new one past the bound evicts (and closes) the one used
// longest ago, rather than running unprepared from then on.
func TestStatementCacheEvictsLeastRecent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		max  int
		run  string // one statement a letter: SELECT 'a' ...
		want string // cached, most recently used first
	}{
		{"fills up to the bound", 3, "abc", "cba"},
		{"evicts the least recent", 2, "abc", "cb"},
		{"a hit keeps a statement", 2, "abac", "ca"},
		{"a bound of one", 1, "aab", "b"},
		{"cycling through more than fit", 2, "abcabc", "cb"},
		{"a hot statement among many", 2, "axaya", "ay"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := openCache(t, tc.max)
			ctx := t.Context()
			for _, c := range tc.run {
				var got string
				if err := db.QueryRowContext(ctx, "SELECT '"+string(c)+"'").Scan(&got); err != nil || got != string(c) {
					t.Fatalf("SELECT %q = %q, %v", c, got, err)
				}
			}
			if got := cachedLetters(db); got != tc.want {
				t.Errorf("after %s with room for %d: cached %q, want %q", tc.run, tc.max, got, tc.want)
			}
		})
	}
}

// An evicted statement somebody is running stays open until that caller
// is done with it, then is closed.
func TestStatementCacheEvictsInUseLater(t *testing.T) {
	t.Parallel()
	db := openCache(t, 1)
	ctx := t.Context()
	held := db.stmt(ctx, "SELECT 'a'")
	if held == nil {
		t.Fatal("SELECT 'a' not cached")
	}
	if _, err := db.ExecContext(ctx, "SELECT 'b'"); err != nil { // evicts a
		t.Fatal(err)
	}
	if got := cachedLetters(db); got != "b" {
		t.Fatalf("cached %q, want b", got)
	}
	var got string
	if err := held.s.QueryRowContext(ctx).Scan(&got); err != nil || got != "a" {
		t.Fatalf("evicted statement in use: %q, %v; want it still open", got, err)
	}
	db.release(held)
	if err := held.s.QueryRowContext(ctx).Scan(&got); err == nil {
		t.Error("evicted statement still open after its last use")
	}
}

func openCache(t *testing.T, max int) *DB {
	t.Helper()
	db, err := Open(t.Context(), filepath.Join(t.TempDir(), "c.db"), Options{NoMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	db.stmts.mu.Lock()
	db.stmts.max = max
	db.stmts.mu.Unlock()
	return db
}

// cachedLetters lists the cached SELECT 'x' statements, most recent first.
func cachedLetters(db *DB) string {
	db.stmts.mu.Lock()
	defer db.stmts.mu.Unlock()
	var out []string
	for e := db.stmts.lru.Front(); e != nil; e = e.Next() {
		q := e.Value.(*cachedStmt).q
		if l, ok := strings.CutPrefix(q, "SELECT '"); ok {
			out = append(out, strings.TrimSuffix(l, "'"))
		}
	}
	if len(out) != len(db.stmts.stmts) {
		return fmt.Sprintf("list %v and map of %d disagree", out, len(db.stmts.stmts))
	}
	return strings.Join(out, "")
}

// Many callers churning a tiny cache: every statement is evicted while
// others run it, and none of them sees a closed statement.
func TestStatementCacheChurn(t *testing.T) {
	t.Parallel()
	db := openCache(t, 2)
	ctx := t.Context()
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			for i := range 200 {
				want := (g + i) % 5
				var got int
				err := db.QueryRowContext(ctx, fmt.Sprintf("SELECT %d", want)).Scan(&got)
				if err == nil && got != want {
					err = fmt.Errorf("SELECT %d = %d", want, got)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
