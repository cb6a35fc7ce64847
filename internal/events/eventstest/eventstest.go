// Package eventstest has helpers for tests of packages built on the event
// log: a real SQLite database in a temporary directory and a stand-in for
// the API key middleware.
package eventstest

import (
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqldb/sqldbtest"
)

// pgByPath maps database file paths to PostgreSQL databases under
// SBX_TEST_DATABASE=postgres.
var pgByPath sync.Map

// OpenDB opens (creating if needed) the database file at path, migrated
// like the server's, and closes it when the test ends. With
// SBX_TEST_DATABASE=postgres it opens a fresh PostgreSQL database instead
// (on the server of SBX_TEST_POSTGRES), so the tests of every package that
// keeps state in the database run on both dialects.
func OpenDB(t testing.TB, path string) *sqldb.DB {
	t.Helper()
	dsn := path
	if os.Getenv("SBX_TEST_DATABASE") == "postgres" {
		// The same tests on PostgreSQL: one database per path, so a test
		// that reopens its file reopens its database.
		v, ok := pgByPath.Load(path)
		if !ok {
			v, _ = pgByPath.LoadOrStore(path, sqldbtest.DSN(t, sqldb.Postgres))
		}
		dsn = v.(string)
	}
	db, err := sqldb.Open(t.Context(), dsn, sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TempDB is OpenDB on a fresh file in t.TempDir; it returns the path too.
func TempDB(t testing.TB) (*sqldb.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sbx.db")
	return OpenDB(t, path), path
}

// TeamHeader is the header AsTeam reads the team ID from; AdminHeader
// (any value) makes the caller the admin.
const (
	TeamHeader  = "X-Test-Team"
	AdminHeader = "X-Test-Admin"
)

// AsTeam stands in for the API key middleware: it puts the team named by
// the X-Test-Team header into the request context (none when absent), as
// the admin with X-Test-Admin.
func AsTeam(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, admin := r.Header.Get(TeamHeader), r.Header.Get(AdminHeader) != ""
		if id != "" || admin {
			r = r.WithContext(auth.WithTeam(r.Context(), auth.Team{ID: id, Name: id, Admin: admin}))
		}
		next.ServeHTTP(w, r)
	})
}
