package sqldb

import (
	"fmt"
	"path/filepath"
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
	db.stmts.mu.RLock()
	cached := len(db.stmts.stmts)
	db.stmts.mu.RUnlock()
	if want := 7; cached != want { // one per distinct statement text
		t.Errorf("%d cached statements, want %d", cached, want)
	}
	// Past the bound, statements still run.
	for i := range maxStmts + 10 {
		if err := db.QueryRowContext(ctx, fmt.Sprintf(`SELECT %d`, i)).Scan(&n); err != nil || n != i {
			t.Fatalf("SELECT %d = %d, %v", i, n, err)
		}
	}
	db.stmts.mu.RLock()
	cached = len(db.stmts.stmts)
	db.stmts.mu.RUnlock()
	if cached > maxStmts {
		t.Errorf("%d cached statements, bound %d", cached, maxStmts)
	}
}
