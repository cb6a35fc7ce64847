// Package sqlstore implements store.Store (teams, API keys, sandboxes) on
// the one database of sqldb: an embedded SQLite file or a PostgreSQL server
// shared by several sbx servers. Its queries are written once for both
// dialects; the schema is sqldb's migrations.
package sqlstore

import (
	"context"
	"time"

	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
)

var _ store.Store = (*Store)(nil)

// Store is the SQL implementation of store.Store.
type Store struct {
	db       *sqldb.DB
	recorder store.Recorder
	now      func() time.Time
}

// New returns a store over db (opened and migrated by sqldb.Open).
// recorder may be nil; it receives every sandbox state change inside the
// transaction that makes it.
func New(db *sqldb.DB, recorder store.Recorder) *Store {
	return &Store{db: db, recorder: recorder, now: time.Now}
}

// Open opens the database dsn names (see sqldb.Open), migrates it and
// returns a store that closes it on Close.
func Open(ctx context.Context, dsn string, recorder store.Recorder) (*Store, error) {
	db, err := sqldb.Open(ctx, dsn, sqldb.Options{})
	if err != nil {
		return nil, err
	}
	return New(db, recorder), nil
}

// SetRecorder sets the change recorder; call before serving requests.
func (s *Store) SetRecorder(r store.Recorder) { s.recorder = r }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }
