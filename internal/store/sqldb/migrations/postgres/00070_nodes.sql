-- Every server sharing the database is a node that heartbeats here. The
-- node that leads the sweep records the running sandboxes of a node whose
-- heartbeat stopped as killed (node_lost); a node marked lost while the
-- same process (boot) still runs is fenced: its heartbeat is refused and it
-- destroys what it no longer owns. Times are Unix milliseconds.

-- +goose Up
CREATE TABLE nodes (
	id           TEXT PRIMARY KEY,
	boot         TEXT NOT NULL,
	address      TEXT NOT NULL DEFAULT '',
	state        TEXT NOT NULL DEFAULT 'ready',
	started_at   BIGINT NOT NULL,
	heartbeat_at BIGINT NOT NULL,
	lost_at      BIGINT NOT NULL DEFAULT 0
);

-- +goose Down
DROP TABLE nodes;
