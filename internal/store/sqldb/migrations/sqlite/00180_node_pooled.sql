-- A node's heartbeat names the templates it has ready pooled sandboxes
-- of, with how many ("TEMPLATE=COUNT ...", at most store.MaxNodePools), so
-- api replicas place a create where it claims a sandbox already started
-- (internal/placement's pool tier).

-- +goose Up
ALTER TABLE nodes ADD COLUMN pooled TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE nodes DROP COLUMN pooled;
