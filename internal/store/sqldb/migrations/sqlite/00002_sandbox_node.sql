-- Several sbx servers may share one database: each sandbox row names the
-- node (server) that runs it, and a server's start-up recovery touches only
-- its own rows. Rows from before get '' and belong to the first server that
-- starts with the default node name rules (see sandbox recovery).

-- +goose Up
ALTER TABLE sandboxes ADD COLUMN node_id TEXT NOT NULL DEFAULT '';
CREATE INDEX sandboxes_node_state ON sandboxes(node_id, state);

-- +goose Down
DROP INDEX sandboxes_node_state;
ALTER TABLE sandboxes DROP COLUMN node_id;
