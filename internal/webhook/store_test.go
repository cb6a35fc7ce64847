package webhook

import (
	"testing"

	"github.com/sbxdev/sbx/internal/events/eventstest"
)

// TestMigrateAddsColumns upgrades a webhooks table made by the first
// version of the schema, and is idempotent.
func TestMigrateAddsColumns(t *testing.T) {
	t.Parallel()
	db, _ := eventstest.TempDB(t)
	if _, err := db.Exec(`CREATE TABLE webhooks (id TEXT PRIMARY KEY, team_id TEXT NOT NULL, name TEXT NOT NULL,
		url TEXT NOT NULL, secret TEXT NOT NULL, events TEXT NOT NULL, enabled INTEGER NOT NULL,
		created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, start_seq INTEGER NOT NULL,
		disabled_reason TEXT NOT NULL DEFAULT '', failing_since INTEGER NOT NULL DEFAULT 0,
		consecutive_failures INTEGER NOT NULL DEFAULT 0)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO webhooks VALUES ('w1','t','n','https://example.com/','s','["sandbox.lifecycle.created"]',1,1,1,0,'',0,0)`); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := Migrate(t.Context(), db); err != nil {
			t.Fatal(err)
		}
	}
	w, err := loadHook(t.Context(), db, "t", "w1")
	if err != nil {
		t.Fatal(err)
	}
	if w.PrevSecret != "" || !w.PrevSecretUntil.IsZero() || w.Secret != "s" {
		t.Fatalf("migrated row: %+v", w)
	}
}
