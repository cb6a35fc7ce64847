package sqlstore_test

import (
	"testing"

	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqldb/sqldbtest"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
	"github.com/sbxdev/sbx/internal/store/storetest"
)

// TestWebhooksConformance runs the webhooks repository's suite on SQLite
// and PostgreSQL, with two handles on one database as two servers.
func TestWebhooksConformance(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, dialect sqldb.Dialect) {
		storetest.RunWebhooks(t, func(t *testing.T) (store.Webhooks, store.Webhooks) {
			dsn := sqldbtest.DSN(t, dialect)
			open := func() store.Webhooks {
				db, err := sqldb.Open(t.Context(), dsn, sqldb.Options{})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
				return sqlstore.NewWebhooks(db)
			}
			return open(), open()
		})
	})
}
