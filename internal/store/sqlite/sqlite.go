// Package sqlite implements store.Store on an embedded SQLite database
// (modernc.org/sqlite, no cgo). The same *sql.DB is shared with the events
// and webhook packages so state changes and their events commit together.
package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/sbxdev/sbx/internal/store"
)

var _ store.Store = (*Store)(nil)

// Store is the SQLite implementation of store.Store.
type Store struct {
	db       *sql.DB
	recorder store.Recorder
	now      func() time.Time
}

// Open opens (creating if needed) the database file at path and migrates it.
// recorder may be nil; it receives every sandbox state change inside the
// transaction that makes it.
func Open(ctx context.Context, path string, recorder store.Recorder) (*Store, error) {
	// SQLite creates the database 0644 and its -wal and -shm files with the
	// database's mode: create it 0600 first, so all three hold secrets
	// (key hashes, sandbox env vars and access tokens) from the start.
	if f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600); err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	} else {
		f.Close()
	}
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)" +
		"&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	s := &Store{db: db, recorder: recorder, now: time.Now}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// DB exposes the shared database handle (events, webhooks).
func (s *Store) DB() *sql.DB { return s.db }

// SetRecorder sets the change recorder; call before serving requests.
func (s *Store) SetRecorder(r store.Recorder) { s.recorder = r }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

const schema = `
CREATE TABLE IF NOT EXISTS teams (
	id TEXT PRIMARY KEY,
	name TEXT NOT NULL UNIQUE,
	created_at INTEGER NOT NULL,
	max_sandboxes INTEGER
);
CREATE TABLE IF NOT EXISTS api_keys (
	hash TEXT PRIMARY KEY,
	team_id TEXT NOT NULL REFERENCES teams(id),
	mask TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	id TEXT NOT NULL DEFAULT '',
	name TEXT NOT NULL DEFAULT '',
	last_used INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS admin_keys (
	id TEXT PRIMARY KEY,
	hash TEXT NOT NULL UNIQUE,
	mask TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	last_used INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sandboxes (
	id TEXT PRIMARY KEY,
	team_id TEXT NOT NULL,
	template_id TEXT NOT NULL,
	build_id TEXT NOT NULL DEFAULT '',
	alias TEXT NOT NULL DEFAULT '',
	state TEXT NOT NULL,
	metadata TEXT NOT NULL DEFAULT '{}',
	env_vars TEXT NOT NULL DEFAULT '{}',
	cpu_count INTEGER NOT NULL,
	memory_mb INTEGER NOT NULL,
	disk_mb INTEGER NOT NULL,
	started_at INTEGER NOT NULL,
	end_at INTEGER NOT NULL,
	killed_at INTEGER NOT NULL DEFAULT 0,
	kill_reason TEXT NOT NULL DEFAULT '',
	access_token TEXT NOT NULL DEFAULT '',
	allow_internet INTEGER NOT NULL DEFAULT 1,
	auto_pause INTEGER NOT NULL DEFAULT 0,
	execution_id TEXT NOT NULL DEFAULT '',
	runtime TEXT NOT NULL DEFAULT '',
	netns TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS sandboxes_team_state ON sandboxes(team_id, state, started_at);
`

func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("migrate sqlite schema: %w", err)
	}
	// Columns added after the first version of a table (issue 12: keys
	// are listed and revoked by ID, teams have a sandbox cap override).
	for _, c := range []struct{ table, def string }{
		{"teams", "max_sandboxes INTEGER"},
		{"api_keys", "id TEXT NOT NULL DEFAULT ''"},
		{"api_keys", "name TEXT NOT NULL DEFAULT ''"},
		{"api_keys", "last_used INTEGER NOT NULL DEFAULT 0"},
	} {
		if err := addColumn(ctx, s.db, c.table, c.def); err != nil {
			return err
		}
	}
	if err := s.backfillKeyIDs(ctx); err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, `CREATE UNIQUE INDEX IF NOT EXISTS api_keys_id ON api_keys(id)`); err != nil {
		return fmt.Errorf("migrate sqlite schema: %w", err)
	}
	return nil
}

func addColumn(ctx context.Context, db *sql.DB, table, def string) error {
	name, _, _ := strings.Cut(def, " ")
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?`, table, name).Scan(&n); err != nil {
		return fmt.Errorf("migrate %s: %w", table, err)
	}
	if n > 0 {
		return nil
	}
	if _, err := db.ExecContext(ctx, `ALTER TABLE `+table+` ADD COLUMN `+def); err != nil {
		return fmt.Errorf("migrate %s: add %s: %w", table, name, err)
	}
	return nil
}

// backfillKeyIDs gives keys created before keys had IDs one each.
func (s *Store) backfillKeyIDs(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, `SELECT hash FROM api_keys WHERE id = ''`)
	if err != nil {
		return fmt.Errorf("migrate api_keys: %w", err)
	}
	var hashes []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			rows.Close()
			return fmt.Errorf("migrate api_keys: %w", err)
		}
		hashes = append(hashes, h)
	}
	rows.Close()
	for _, h := range hashes {
		_, err := s.db.ExecContext(ctx, `UPDATE api_keys SET id = ?, name = CASE name WHEN '' THEN 'default' ELSE name END WHERE hash = ?`,
			uuid.NewString(), h)
		if err != nil {
			return fmt.Errorf("migrate api_keys: %w", err)
		}
	}
	return nil
}
