// Package sqldbtest gives tests real databases of both dialects: a SQLite
// file in a temporary directory, and a fresh database on the throwaway
// PostgreSQL server `make test` starts (scripts/with-postgres.sh). Without
// that server PostgreSQL tests skip, or fail under SBX_REQUIRE_INTEGRATION=1.
package sqldbtest

import (
	"context"
	"database/sql"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/testenv"
)

// Dialects are the databases every conformance suite runs against.
var Dialects = []sqldb.Dialect{sqldb.SQLite, sqldb.Postgres}

// DSN returns the data source name of a new, empty database of dialect,
// dropped when the test ends.
func DSN(t testing.TB, dialect sqldb.Dialect) string {
	t.Helper()
	if dialect == sqldb.SQLite {
		return filepath.Join(t.TempDir(), "sbx.db")
	}
	testenv.Require(t, testenv.Postgres)
	server := os.Getenv("SBX_TEST_POSTGRES")
	admin, err := sql.Open("pgx", server)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	name := "sbx_test_" + strings.ReplaceAll(uuid.NewString(), "-", "")
	if _, err := admin.ExecContext(t.Context(), `CREATE DATABASE `+name); err != nil {
		t.Fatalf("create test database on %s: %v", server, err)
	}
	t.Cleanup(func() {
		admin, err := sql.Open("pgx", server)
		if err != nil {
			return
		}
		defer admin.Close()
		admin.ExecContext(context.Background(), `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`)
	})
	u, err := url.Parse(server)
	if err != nil {
		t.Fatalf("SBX_TEST_POSTGRES: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// Open opens a new, migrated database of dialect, closed and dropped when
// the test ends.
func Open(t testing.TB, dialect sqldb.Dialect) *sqldb.DB {
	t.Helper()
	db, err := sqldb.Open(t.Context(), DSN(t, dialect), sqldb.Options{})
	if err != nil {
		t.Fatalf("open %s: %v", dialect, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Run runs fn as a subtest per dialect.
func Run(t *testing.T, fn func(t *testing.T, dialect sqldb.Dialect)) {
	for _, d := range Dialects {
		t.Run(string(d), func(t *testing.T) { fn(t, d) })
	}
}
