-- Each build runs on the server (node) that accepted it, in a build
-- sandbox of that server. A restarting server fails the builds it was
-- running and must leave alone those another server sharing the database
-- is running: the build records its node. '' = from before nodes (failed
-- by the first server that restarts, as before).

-- +goose Up
ALTER TABLE tpl_builds ADD COLUMN node_id TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE tpl_builds DROP COLUMN node_id;
