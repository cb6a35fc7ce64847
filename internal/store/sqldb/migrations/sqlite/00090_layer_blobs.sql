-- The blobs (internal/blob, by digest) that make up the layer stacks of
-- template builds (owner_kind 'build') and of sandboxes paused to the blob
-- store (owner_kind 'sandbox': their own layers, above their build's), so
-- any server sharing the database and the blob store can pull them. A
-- digest of '' is a layer every node prepares itself, found by path (a
-- built-in template's root filesystem). position 0 is the topmost layer.
-- created_at is Unix milliseconds.

-- +goose Up
CREATE TABLE layer_blobs (
	owner_kind TEXT NOT NULL,
	owner_id   TEXT NOT NULL,
	position   INTEGER NOT NULL,
	digest     TEXT NOT NULL DEFAULT '',
	size       BIGINT NOT NULL DEFAULT 0,
	path       TEXT NOT NULL DEFAULT '',
	created_at BIGINT NOT NULL,
	PRIMARY KEY (owner_kind, owner_id, position)
);
CREATE INDEX layer_blobs_digest ON layer_blobs (digest);

-- +goose Down
DROP TABLE layer_blobs;
