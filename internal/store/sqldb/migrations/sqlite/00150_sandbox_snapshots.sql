-- Sandbox snapshots (POST /sandboxes/{id}/snapshots), shared by every
-- server of a cluster so listing, naming and deleting agree: before this
-- each lived in its node's data dir as meta.json. Their own layers are in
-- layer_blobs (owner_kind 'snapshot'); build_id / base_template name the
-- template build beneath them; template is the JSON of what sandboxes
-- started from it run as; memory_node is the node holding a checkpoint
-- image ('' for a filesystem snapshot). A name is unique among all teams'
-- snapshots, as template names are. Times are Unix milliseconds.

-- +goose Up
CREATE TABLE sandbox_snapshots (
	id            TEXT PRIMARY KEY,
	team_id       TEXT NOT NULL,
	name          TEXT NOT NULL DEFAULT '',
	sandbox_id    TEXT NOT NULL DEFAULT '',
	base_template TEXT NOT NULL DEFAULT '',
	build_id      TEXT NOT NULL DEFAULT '',
	template      TEXT NOT NULL DEFAULT '',
	memory_node   TEXT NOT NULL DEFAULT '',
	size_bytes    BIGINT NOT NULL DEFAULT 0,
	created_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX sandbox_snapshots_name ON sandbox_snapshots (name) WHERE name != '';
CREATE INDEX sandbox_snapshots_team ON sandbox_snapshots (team_id, created_at);

-- +goose Down
DROP TABLE sandbox_snapshots;
