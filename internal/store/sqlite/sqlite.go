// Package sqlite implements store.Store on an embedded SQLite database
// (modernc.org/sqlite, no cgo). The same *sql.DB is shared with the events
// and webhook packages so state changes and their events commit together.
package sqlite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/sbxdev/sbx/internal/errdefs"
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
	created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
	hash TEXT PRIMARY KEY,
	team_id TEXT NOT NULL REFERENCES teams(id),
	mask TEXT NOT NULL,
	created_at INTEGER NOT NULL
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
	return nil
}

// HashKey is how API keys are stored: never in clear.
func HashKey(apiKey string) string {
	sum := sha256.Sum256([]byte(apiKey))
	return hex.EncodeToString(sum[:])
}

func mask(apiKey string) string {
	if len(apiKey) < 10 {
		return "***"
	}
	return apiKey[:6] + "..." + apiKey[len(apiKey)-4:]
}

// CreateTeam creates a team and its first API key.
func (s *Store) CreateTeam(ctx context.Context, name, apiKey string) (store.Team, error) {
	t := store.Team{ID: uuid.NewString(), Name: name, CreatedAt: s.now().UTC()}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return store.Team{}, fmt.Errorf("create team: %w", err)
	}
	defer tx.Rollback()
	_, err = tx.ExecContext(ctx, `INSERT INTO teams(id, name, created_at) VALUES(?,?,?)`,
		t.ID, t.Name, t.CreatedAt.UnixNano())
	if err != nil {
		if strings.Contains(err.Error(), "UNIQUE") {
			return store.Team{}, errdefs.Exists("team %q already exists; pick another name", name)
		}
		return store.Team{}, fmt.Errorf("create team %s: %w", name, err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO api_keys(hash, team_id, mask, created_at) VALUES(?,?,?,?)`,
		HashKey(apiKey), t.ID, mask(apiKey), t.CreatedAt.UnixNano())
	if err != nil {
		return store.Team{}, fmt.Errorf("create api key for team %s: %w", name, err)
	}
	return t, tx.Commit()
}

// TeamByAPIKey resolves an API key to its team.
func (s *Store) TeamByAPIKey(ctx context.Context, apiKey string) (store.Team, error) {
	row := s.db.QueryRowContext(ctx, `SELECT t.id, t.name, t.created_at FROM api_keys k
		JOIN teams t ON t.id = k.team_id WHERE k.hash = ?`, HashKey(apiKey))
	return scanTeam(row, "API key")
}

// TeamByName finds a team by name.
func (s *Store) TeamByName(ctx context.Context, name string) (store.Team, error) {
	row := s.db.QueryRowContext(ctx, `SELECT id, name, created_at FROM teams WHERE name = ?`, name)
	return scanTeam(row, "team "+name)
}

// Teams lists every team, oldest first.
func (s *Store) Teams(ctx context.Context) ([]store.Team, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, created_at FROM teams ORDER BY created_at`)
	if err != nil {
		return nil, fmt.Errorf("list teams: %w", err)
	}
	defer rows.Close()
	var out []store.Team
	for rows.Next() {
		t, err := scanTeam(rows, "team")
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

type scanner interface{ Scan(...any) error }

func scanTeam(row scanner, what string) (store.Team, error) {
	var t store.Team
	var created int64
	if err := row.Scan(&t.ID, &t.Name, &created); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return store.Team{}, errdefs.NotFound("%s not found", what)
		}
		return store.Team{}, fmt.Errorf("read %s: %w", what, err)
	}
	t.CreatedAt = time.Unix(0, created).UTC()
	return t, nil
}
