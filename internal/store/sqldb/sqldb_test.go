package sqldb_test

import (
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sbxdev/sbx/internal/store/sqldb"
)

// loadDump writes a SQLite database from a text dump (sqlite3 .dump).
func loadDump(t *testing.T, dump string) string {
	t.Helper()
	b, err := os.ReadFile(dump)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sbx.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(string(b)); err != nil {
		t.Fatalf("load %s: %v", dump, err)
	}
	return path
}

// TestAdoptsDatabaseOfPreviousRelease opens a database written by the last
// release before versioned migrations (testdata/v0-schema.sql is the dump
// of one made by that code: every package's tables, a team, keys, a
// sandbox, its event, a webhook, a template, a budget, a refinement) and
// checks that the baseline adopts it: its rows stay, it reaches the
// current version, and a second open has nothing to do.
func TestAdoptsDatabaseOfPreviousRelease(t *testing.T) {
	path := loadDump(t, "testdata/v0-schema.sql")
	db, err := sqldb.Open(t.Context(), path, sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	current, latest, err := db.Version(t.Context())
	if err != nil || current != latest || latest < 2 {
		t.Fatalf("version %d of %d, %v", current, latest, err)
	}
	for table, want := range map[string]int{"teams": 1, "api_keys": 1, "admin_keys": 1, "sandboxes": 1,
		"events": 1, "webhooks": 1, "tpl_templates": 1, "budgets": 1, "refinements": 1} {
		var n int
		if err := db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM `+table).Scan(&n); err != nil || n != want {
			t.Errorf("%s: %d rows, %v; want %d", table, n, err, want)
		}
	}
	var node string
	if err := db.QueryRowContext(t.Context(), `SELECT node_id FROM sandboxes WHERE id = 'ilegacy1'`).Scan(&node); err != nil || node != "" {
		t.Errorf("legacy sandbox node %q, %v", node, err)
	}
	db.Close()
	db, err = sqldb.Open(t.Context(), path, sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if applied, err := db.Migrate(t.Context()); err != nil || len(applied) != 0 {
		t.Errorf("second migration applied %v, %v", applied, err)
	}
}

// TestAdoptsOlderTables: tables from before columns were added by hand
// (keys without IDs, webhooks without a previous secret, builds without
// tags, stored receiver answers) are brought up to date.
func TestAdoptsOlderTables(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sbx.db")
	raw, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`
		CREATE TABLE teams (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL);
		CREATE TABLE api_keys (hash TEXT PRIMARY KEY, team_id TEXT NOT NULL REFERENCES teams(id), mask TEXT NOT NULL, created_at INTEGER NOT NULL);
		INSERT INTO teams VALUES ('t1', 'default', 1);
		INSERT INTO api_keys VALUES ('h1', 't1', 'e2b_01...4567', 1);
		CREATE TABLE webhooks (id TEXT PRIMARY KEY, team_id TEXT NOT NULL, name TEXT NOT NULL,
			url TEXT NOT NULL, secret TEXT NOT NULL, events TEXT NOT NULL, enabled INTEGER NOT NULL,
			created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, start_seq INTEGER NOT NULL,
			disabled_reason TEXT NOT NULL DEFAULT '', failing_since INTEGER NOT NULL DEFAULT 0,
			consecutive_failures INTEGER NOT NULL DEFAULT 0);
		INSERT INTO webhooks VALUES ('w1','t1','n','https://example.com/','s','[]',1,1,1,0,'',0,0);
		CREATE TABLE tpl_builds (id TEXT PRIMARY KEY, template_id TEXT NOT NULL, status TEXT NOT NULL,
			reason TEXT NOT NULL DEFAULT '', reason_step TEXT NOT NULL DEFAULT '', request TEXT NOT NULL DEFAULT '{}',
			result TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL, finished_at TEXT NOT NULL DEFAULT '');
		INSERT INTO tpl_builds (id, template_id, status, created_at) VALUES ('b1', 't', 'ready', '2026-01-01T00:00:00Z');
		CREATE TABLE webhook_attempts (id TEXT PRIMARY KEY, delivery_id TEXT NOT NULL, webhook_id TEXT NOT NULL,
			attempt INTEGER NOT NULL, status TEXT NOT NULL, duration_ms REAL NOT NULL, request_url TEXT NOT NULL,
			request_headers TEXT NOT NULL, response_status INTEGER, response_headers TEXT, response_body TEXT,
			error_class TEXT, error_message TEXT, ts INTEGER NOT NULL);
		INSERT INTO webhook_attempts (id, delivery_id, webhook_id, attempt, status, duration_ms, request_url,
			request_headers, response_status, response_headers, response_body, ts)
			VALUES ('a1','d1','w1',1,'failed',1,'http://x/','{}',500,'{"x-secret":"s"}','internal page',1);
	`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	db, err := sqldb.Open(t.Context(), path, sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := t.Context()
	var id, name string
	if err := db.QueryRowContext(ctx, `SELECT id, name FROM api_keys WHERE hash = 'h1'`).Scan(&id, &name); err != nil || id == "" || name != "default" {
		t.Errorf("legacy key: id %q name %q, %v", id, name, err)
	}
	var prev string
	var until int64
	if err := db.QueryRowContext(ctx, `SELECT prev_secret, prev_secret_until FROM webhooks WHERE id = 'w1'`).Scan(&prev, &until); err != nil || prev != "" || until != 0 {
		t.Errorf("legacy webhook: %q %d, %v", prev, until, err)
	}
	var tags string
	if err := db.QueryRowContext(ctx, `SELECT tags FROM tpl_builds WHERE id = 'b1'`).Scan(&tags); err != nil || tags != "[]" {
		t.Errorf("legacy build tags %q, %v", tags, err)
	}
	var body, headers sql.NullString
	if err := db.QueryRowContext(ctx, `SELECT response_headers, response_body FROM webhook_attempts WHERE id = 'a1'`).Scan(&headers, &body); err != nil || body.Valid || headers.Valid {
		t.Errorf("stored receiver answer kept: %v %v, %v", headers, body, err)
	}
}

// TestConcurrentOpens: servers starting together on one new database
// migrate it once, under the lock, and all open it.
func TestConcurrentOpens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sbx.db")
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			db, err := sqldb.Open(t.Context(), path, sqldb.Options{})
			if err == nil {
				db.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// TestRefusesNewerSchema: a database migrated by a newer sbx is not
// opened by an older one, which would misread it.
func TestRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sbx.db")
	db, err := sqldb.Open(t.Context(), path, sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(t.Context(), `INSERT INTO goose_db_version (version_id, is_applied) VALUES (9999, 1)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = sqldb.Open(t.Context(), path, sqldb.Options{})
	if err == nil || !strings.Contains(err.Error(), "newer sbx") {
		t.Fatalf("open newer database: %v", err)
	}
}

// TestBackup copies a live database into a new private file that opens
// with the same rows, and refuses to overwrite a file.
func TestBackup(t *testing.T) {
	dir := t.TempDir()
	db, err := sqldb.Open(t.Context(), filepath.Join(dir, "sbx.db"), sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(t.Context(), `INSERT INTO teams (id, name, created_at) VALUES ('t1', 'a', 1)`); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "copy.db")
	if err := db.Backup(t.Context(), dst); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v", fi, err)
	}
	cp, err := sqldb.Open(t.Context(), dst, sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	var name string
	if err := cp.QueryRowContext(t.Context(), `SELECT name FROM teams WHERE id = 't1'`).Scan(&name); err != nil || name != "a" {
		t.Errorf("team in backup: %q, %v", name, err)
	}
	if err := db.Backup(t.Context(), dst); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("backup over a file: %v", err)
	}
}

func TestRebind(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`SELECT a FROM t WHERE b = ? AND c = ?`, `SELECT a FROM t WHERE b = $1 AND c = $2`},
		{`UPDATE t SET a=?2 WHERE id=?1`, `UPDATE t SET a=$2 WHERE id=$1`},
		{`SELECT '?' , "x?" FROM t WHERE a = ?`, `SELECT '?' , "x?" FROM t WHERE a = $1`},
		{`SELECT 'it''s ?' WHERE a = ?`, `SELECT 'it''s ?' WHERE a = $1`},
	} {
		if got := sqldb.Rebind(c.in); got != c.want {
			t.Errorf("Rebind(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
