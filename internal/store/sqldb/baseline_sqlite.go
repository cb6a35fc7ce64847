package sqldb

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// sqliteBaseline is migration 1 on SQLite. It adopts the databases sbx
// wrote before it had versioned migrations, when each package created its
// own tables with CREATE TABLE IF NOT EXISTS and added columns by hand: the
// tables are created only where missing, the columns added since each
// table's first release are added where missing, and API keys from before
// keys had IDs get one. On a new database it simply creates the schema.
// Later changes are numbered SQL files in migrations/sqlite.
func sqliteBaseline(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, sqliteBaselineSchema); err != nil {
		return fmt.Errorf("create tables: %w", err)
	}
	for _, c := range []struct{ table, def string }{
		{"teams", "max_sandboxes INTEGER"},
		{"api_keys", "id TEXT NOT NULL DEFAULT ''"},
		{"api_keys", "name TEXT NOT NULL DEFAULT ''"},
		{"api_keys", "last_used INTEGER NOT NULL DEFAULT 0"},
		{"webhooks", "prev_secret TEXT NOT NULL DEFAULT ''"},
		{"webhooks", "prev_secret_until INTEGER NOT NULL DEFAULT 0"},
		{"tpl_builds", "tags TEXT NOT NULL DEFAULT '[]'"},
	} {
		name, _, _ := strings.Cut(c.def, " ")
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?`, c.table, name).Scan(&n); err != nil {
			return fmt.Errorf("inspect %s: %w", c.table, err)
		}
		if n > 0 {
			continue
		}
		if _, err := tx.ExecContext(ctx, `ALTER TABLE `+c.table+` ADD COLUMN `+c.def); err != nil {
			return fmt.Errorf("add %s.%s: %w", c.table, name, err)
		}
	}
	rows, err := tx.QueryContext(ctx, `SELECT hash FROM api_keys WHERE id = ''`)
	if err != nil {
		return fmt.Errorf("read api keys: %w", err)
	}
	var hashes []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			rows.Close()
			return fmt.Errorf("read api keys: %w", err)
		}
		hashes = append(hashes, h)
	}
	rows.Close()
	for _, h := range hashes {
		if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET id = ?, name = CASE name WHEN '' THEN 'default' ELSE name END
			WHERE hash = ?`, uuid.NewString(), h); err != nil {
			return fmt.Errorf("give api key an ID: %w", err)
		}
	}
	// Receivers' answers are no longer kept; drop those an earlier version
	// stored (the columns stay, NULL).
	if _, err := tx.ExecContext(ctx, `CREATE UNIQUE INDEX IF NOT EXISTS api_keys_id ON api_keys(id);
		UPDATE webhook_attempts SET response_body = NULL, response_headers = NULL
		WHERE response_body IS NOT NULL OR response_headers IS NOT NULL`); err != nil {
		return err
	}
	return nil
}

// sqliteBaselineSchema is the schema as of the last release without
// versioned migrations, table by table in the order its owners made them.
const sqliteBaselineSchema = `
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

CREATE TABLE IF NOT EXISTS events (
	seq          INTEGER PRIMARY KEY AUTOINCREMENT,
	id           TEXT NOT NULL UNIQUE,
	version      TEXT NOT NULL,
	type         TEXT NOT NULL,
	team_id      TEXT NOT NULL,
	sandbox_id   TEXT NOT NULL DEFAULT '',
	template_id  TEXT NOT NULL DEFAULT '',
	build_id     TEXT NOT NULL DEFAULT '',
	execution_id TEXT NOT NULL DEFAULT '',
	event_data   TEXT,
	ts           INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_team_seq ON events(team_id, seq);
CREATE INDEX IF NOT EXISTS events_sandbox_seq ON events(sandbox_id, seq);

CREATE TABLE IF NOT EXISTS webhooks (
	id                   TEXT PRIMARY KEY,
	team_id              TEXT NOT NULL,
	name                 TEXT NOT NULL,
	url                  TEXT NOT NULL,
	secret               TEXT NOT NULL,
	events               TEXT NOT NULL,
	enabled              INTEGER NOT NULL,
	created_at           INTEGER NOT NULL,
	updated_at           INTEGER NOT NULL,
	start_seq            INTEGER NOT NULL,
	disabled_reason      TEXT NOT NULL DEFAULT '',
	failing_since        INTEGER NOT NULL DEFAULT 0,
	consecutive_failures INTEGER NOT NULL DEFAULT 0,
	prev_secret          TEXT NOT NULL DEFAULT '',
	prev_secret_until    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS webhooks_team ON webhooks(team_id);
CREATE TABLE IF NOT EXISTS webhook_cursor (
	id  INTEGER PRIMARY KEY CHECK (id = 1),
	seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
	rid             INTEGER PRIMARY KEY AUTOINCREMENT,
	id              TEXT NOT NULL UNIQUE,
	webhook_id      TEXT NOT NULL,
	team_id         TEXT NOT NULL,
	event_id        TEXT NOT NULL,
	event_seq       INTEGER NOT NULL,
	event_type      TEXT NOT NULL,
	sandbox_id      TEXT NOT NULL,
	body            BLOB NOT NULL,
	state           TEXT NOT NULL,
	attempts        INTEGER NOT NULL DEFAULT 0,
	max_attempts    INTEGER NOT NULL,
	next_attempt_at INTEGER NOT NULL,
	created_at      INTEGER NOT NULL,
	updated_at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_pending ON webhook_deliveries(state, webhook_id);
CREATE INDEX IF NOT EXISTS webhook_deliveries_webhook ON webhook_deliveries(webhook_id, rid);
CREATE INDEX IF NOT EXISTS webhook_deliveries_updated ON webhook_deliveries(updated_at);
CREATE TABLE IF NOT EXISTS webhook_attempts (
	id               TEXT PRIMARY KEY,
	delivery_id      TEXT NOT NULL,
	webhook_id       TEXT NOT NULL,
	attempt          INTEGER NOT NULL,
	status           TEXT NOT NULL,
	duration_ms      REAL NOT NULL,
	request_url      TEXT NOT NULL,
	request_headers  TEXT NOT NULL,
	response_status  INTEGER,
	response_headers TEXT,
	response_body    TEXT,
	error_class      TEXT,
	error_message    TEXT,
	ts               INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_attempts_delivery ON webhook_attempts(delivery_id);
CREATE INDEX IF NOT EXISTS webhook_attempts_webhook_ts ON webhook_attempts(webhook_id, ts);

CREATE TABLE IF NOT EXISTS tpl_templates (
	id            TEXT PRIMARY KEY,
	team_id       TEXT NOT NULL,
	names         TEXT NOT NULL DEFAULT '[]',
	public        INTEGER NOT NULL DEFAULT 0,
	cpu_count     INTEGER NOT NULL,
	memory_mb     INTEGER NOT NULL,
	disk_mb       INTEGER NOT NULL,
	current_build TEXT NOT NULL DEFAULT '',
	build_count   INTEGER NOT NULL DEFAULT 0,
	created_at    TEXT NOT NULL,
	updated_at    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tpl_builds (
	id          TEXT PRIMARY KEY,
	template_id TEXT NOT NULL,
	status      TEXT NOT NULL,
	reason      TEXT NOT NULL DEFAULT '',
	reason_step TEXT NOT NULL DEFAULT '',
	request     TEXT NOT NULL DEFAULT '{}',
	result      TEXT NOT NULL DEFAULT '{}',
	created_at  TEXT NOT NULL,
	finished_at TEXT NOT NULL DEFAULT '',
	tags        TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS tpl_builds_template ON tpl_builds(template_id);
CREATE TABLE IF NOT EXISTS tpl_tags (
	template_id TEXT NOT NULL,
	tag         TEXT NOT NULL,
	build_id    TEXT NOT NULL,
	created_at  TEXT NOT NULL,
	PRIMARY KEY (template_id, tag)
);
CREATE INDEX IF NOT EXISTS tpl_tags_build ON tpl_tags(build_id);
CREATE TABLE IF NOT EXISTS tpl_build_logs (
	build_id TEXT NOT NULL,
	seq      INTEGER NOT NULL,
	ts       TEXT NOT NULL,
	level    TEXT NOT NULL,
	step     TEXT NOT NULL DEFAULT '',
	message  TEXT NOT NULL,
	PRIMARY KEY (build_id, seq)
);

CREATE TABLE IF NOT EXISTS budgets (
	team_id           TEXT PRIMARY KEY,
	max_concurrent    INTEGER NOT NULL DEFAULT 0,
	max_daily_creates INTEGER NOT NULL DEFAULT 0,
	max_daily_spend   REAL NOT NULL DEFAULT 0,
	max_monthly_spend REAL NOT NULL DEFAULT 0,
	warn_at_percent   REAL NOT NULL DEFAULT 0,
	action            TEXT NOT NULL DEFAULT 'none',
	updated_at        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS budget_alerts (
	team_id TEXT NOT NULL,
	kind    TEXT NOT NULL,
	period  TEXT NOT NULL,
	ts      INTEGER NOT NULL,
	PRIMARY KEY (team_id, kind, period)
);

CREATE TABLE IF NOT EXISTS refinements (
	id         TEXT PRIMARY KEY,
	team_id    TEXT NOT NULL,
	status     TEXT NOT NULL,
	started_at TEXT NOT NULL,
	result     TEXT NOT NULL
);
`
