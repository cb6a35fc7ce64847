package sqlstore_test

import (
	"database/sql"
	"os"
	"path/filepath"
	"testing"

	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqldb/sqldbtest"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
	"github.com/sbxdev/sbx/internal/store/storetest"
)

// TestConformance runs the store suite on SQLite and on a real PostgreSQL.
func TestConformance(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, dialect sqldb.Dialect) {
		storetest.Run(t, func(t *testing.T, rec store.Recorder) store.Store {
			return sqlstore.New(sqldbtest.Open(t, dialect), rec)
		})
	})
}

// TestMigrateLegacyKeys opens a database written before keys had IDs,
// names and structured masks: the keys keep working and become listable.
func TestMigrateLegacyKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sbx.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	const key = "e2b_0123456789abcdef0123456789abcdef01234567"
	for _, q := range []string{
		`CREATE TABLE teams (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL)`,
		`CREATE TABLE api_keys (hash TEXT PRIMARY KEY, team_id TEXT NOT NULL REFERENCES teams(id), mask TEXT NOT NULL, created_at INTEGER NOT NULL)`,
		`INSERT INTO teams VALUES ('t1', 'default', 1)`,
		`INSERT INTO api_keys VALUES ('` + sqlstore.HashKey(key) + `', 't1', 'e2b_01...4567', 1)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	s, err := sqlstore.Open(t.Context(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k, team, _, err := s.ResolveAPIKey(t.Context(), key)
	if err != nil || team.ID != "t1" || k.ID == "" || k.Name != "default" {
		t.Fatalf("legacy key resolves to %+v, %+v, %v", k, team, err)
	}
	want := store.KeyMask{Prefix: "e2b_", ValueLength: 40, MaskedPrefix: "01", MaskedSuffix: "4567"}
	if k.Mask != want {
		t.Errorf("legacy mask = %+v, want %+v", k.Mask, want)
	}
}

func TestDatabaseIsPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sbx.db")
	s, err := sqlstore.Open(t.Context(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateTeam(t.Context(), "a", "e2b_aaaa"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %o, want 600", filepath.Base(p), fi.Mode().Perm())
		}
	}
}
