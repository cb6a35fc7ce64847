-- Team volumes (E2B's /volumes): persistent filesystems that outlive
-- sandboxes. The content is an ext4 image per volume in the data dir of
-- the server that made it (internal/volume); the token authorizes the
-- /volumecontent API for that volume alone.

-- +goose Up
CREATE TABLE volumes (
	id         TEXT PRIMARY KEY,
	team_id    TEXT NOT NULL,
	name       TEXT NOT NULL,
	token      TEXT NOT NULL,
	size_mb    BIGINT NOT NULL,
	created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX volumes_team_name ON volumes(team_id, name);

-- +goose Down
DROP INDEX volumes_team_name;
DROP TABLE volumes;
