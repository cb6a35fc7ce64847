package webhook

import (
	"database/sql"
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

// TestMigrateDropsStoredResponses: receivers' answers an earlier version
// kept are dropped.
func TestMigrateDropsStoredResponses(t *testing.T) {
	t.Parallel()
	db, _ := eventstest.TempDB(t)
	if err := Migrate(t.Context(), db); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO webhook_attempts (id, delivery_id, webhook_id, attempt, status, duration_ms, request_url,
		request_headers, response_status, response_headers, response_body, ts)
		VALUES ('a1','d1','w1',1,'failed',1,'http://x/','{}',500,'{"x-secret":"s"}','internal page',1)`); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(t.Context(), db); err != nil {
		t.Fatal(err)
	}
	var body, headers sql.NullString
	var status int
	if err := db.QueryRow(`SELECT response_status, response_headers, response_body FROM webhook_attempts WHERE id = 'a1'`).Scan(&status, &headers, &body); err != nil {
		t.Fatal(err)
	}
	if body.Valid || headers.Valid || status != 500 {
		t.Errorf("after migration: status %d, headers %v, body %v", status, headers, body)
	}
}
