-- A node's heartbeat names the template builds whose layers it holds
-- (space-separated build IDs, at most store.MaxNodeBuilds), so api
-- replicas place a template's sandboxes where they start without a pull
-- (internal/placement's layers tier).

-- +goose Up
ALTER TABLE nodes ADD COLUMN builds TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE nodes DROP COLUMN builds;
