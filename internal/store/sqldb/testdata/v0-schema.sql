PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE teams (
	id TEXT PRIMARY KEY,
	name TEXT NOT NULL UNIQUE,
	created_at INTEGER NOT NULL,
	max_sandboxes INTEGER
);
INSERT INTO teams VALUES('9454357a-61c1-4f34-b88a-5d5418f8e7d0','legacy',1796257622923779866,NULL);
CREATE TABLE api_keys (
	hash TEXT PRIMARY KEY,
	team_id TEXT NOT NULL REFERENCES teams(id),
	mask TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	id TEXT NOT NULL DEFAULT '',
	name TEXT NOT NULL DEFAULT '',
	last_used INTEGER NOT NULL DEFAULT 0
);
INSERT INTO api_keys VALUES('285c79b208f1b809feed44bd1339b85da6a5f0a9c2e0fb5a95792d7989af7232','9454357a-61c1-4f34-b88a-5d5418f8e7d0','{"Prefix":"e2b_","ValueLength":40,"MaskedPrefix":"01","MaskedSuffix":"4567"}',1796257622923779866,'d8af1978-161f-43a9-9099-7a43b4756abc','default',0);
CREATE TABLE admin_keys (
	id TEXT PRIMARY KEY,
	hash TEXT NOT NULL UNIQUE,
	mask TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	last_used INTEGER NOT NULL DEFAULT 0
);
INSERT INTO admin_keys VALUES('96312d19-b874-429c-a169-1a8991f893c1','90841f6e66b92d326854cb272e4c9c41758e75ffc3d8fb773410c1b0d711516d','{"Prefix":"sbx_admin_","ValueLength":40,"MaskedPrefix":"01","MaskedSuffix":"4567"}',1796257622924924574,0);
CREATE TABLE sandboxes (
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
INSERT INTO sandboxes VALUES('ilegacy1','9454357a-61c1-4f34-b88a-5d5418f8e7d0','base','b1','','running','{"k":"v"}','{}',2,512,1024,1796040000000000000,1796043600000000000,0,'','tok',1,0,'','crun','');
CREATE TABLE events (
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
INSERT INTO events VALUES(1,'81785b3a-f362-494c-b403-394fd6222c02','v2','sandbox.lifecycle.created','9454357a-61c1-4f34-b88a-5d5418f8e7d0','ilegacy1','base','b1','',NULL,1796257622927068344);
CREATE TABLE webhooks (
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
INSERT INTO webhooks VALUES('wh1','9454357a-61c1-4f34-b88a-5d5418f8e7d0','hook','http://127.0.0.1:9/x','secret-1','["sandbox.lifecycle.created"]',1,1,1,0,'',0,0,'',0);
CREATE TABLE webhook_cursor (
	id  INTEGER PRIMARY KEY CHECK (id = 1),
	seq INTEGER NOT NULL
);
INSERT INTO webhook_cursor VALUES(1,1);
CREATE TABLE webhook_deliveries (
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
CREATE TABLE webhook_attempts (
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
CREATE TABLE tpl_templates (
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
INSERT INTO tpl_templates VALUES('tpl1','9454357a-61c1-4f34-b88a-5d5418f8e7d0','["mytpl"]',0,2,512,1024,'',0,'2026-11-30T12:00:00Z','2026-11-30T12:00:00Z');
CREATE TABLE tpl_builds (
	id          TEXT PRIMARY KEY,
	template_id TEXT NOT NULL,
	status      TEXT NOT NULL,
	reason      TEXT NOT NULL DEFAULT '',
	reason_step TEXT NOT NULL DEFAULT '',
	request     TEXT NOT NULL DEFAULT '{}',
	result      TEXT NOT NULL DEFAULT '{}',
	created_at  TEXT NOT NULL,
	finished_at TEXT NOT NULL DEFAULT ''
, tags TEXT NOT NULL DEFAULT '[]');
CREATE TABLE tpl_tags (
	template_id TEXT NOT NULL,
	tag         TEXT NOT NULL,
	build_id    TEXT NOT NULL,
	created_at  TEXT NOT NULL,
	PRIMARY KEY (template_id, tag)
);
CREATE TABLE tpl_build_logs (
	build_id TEXT NOT NULL,
	seq      INTEGER NOT NULL,
	ts       TEXT NOT NULL,
	level    TEXT NOT NULL,
	step     TEXT NOT NULL DEFAULT '',
	message  TEXT NOT NULL,
	PRIMARY KEY (build_id, seq)
);
CREATE TABLE budgets (
	team_id           TEXT PRIMARY KEY,
	max_concurrent    INTEGER NOT NULL DEFAULT 0,
	max_daily_creates INTEGER NOT NULL DEFAULT 0,
	max_daily_spend   REAL NOT NULL DEFAULT 0,
	max_monthly_spend REAL NOT NULL DEFAULT 0,
	warn_at_percent   REAL NOT NULL DEFAULT 0,
	action            TEXT NOT NULL DEFAULT 'none',
	updated_at        INTEGER NOT NULL
);
INSERT INTO budgets VALUES('9454357a-61c1-4f34-b88a-5d5418f8e7d0',3,0,0.0,0.0,0.0,'none',1);
CREATE TABLE budget_alerts (
	team_id TEXT NOT NULL,
	kind    TEXT NOT NULL,
	period  TEXT NOT NULL,
	ts      INTEGER NOT NULL,
	PRIMARY KEY (team_id, kind, period)
);
CREATE TABLE refinements (
	id         TEXT PRIMARY KEY,
	team_id    TEXT NOT NULL,
	status     TEXT NOT NULL,
	started_at TEXT NOT NULL,
	result     TEXT NOT NULL
);
INSERT INTO refinements VALUES('ref1','9454357a-61c1-4f34-b88a-5d5418f8e7d0','succeeded','2026-11-30T12:00:00Z','{}');
DELETE FROM sqlite_sequence;
INSERT INTO sqlite_sequence VALUES('events',1);
CREATE INDEX sandboxes_team_state ON sandboxes(team_id, state, started_at);
CREATE UNIQUE INDEX api_keys_id ON api_keys(id);
CREATE INDEX events_team_seq ON events(team_id, seq);
CREATE INDEX events_sandbox_seq ON events(sandbox_id, seq);
CREATE INDEX webhooks_team ON webhooks(team_id);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries(state, webhook_id);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries(webhook_id, rid);
CREATE INDEX webhook_deliveries_updated ON webhook_deliveries(updated_at);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts(delivery_id);
CREATE INDEX webhook_attempts_webhook_ts ON webhook_attempts(webhook_id, ts);
CREATE INDEX tpl_builds_template ON tpl_builds(template_id);
CREATE INDEX tpl_tags_build ON tpl_tags(build_id);
COMMIT;
