-- volumes.node_id: the node (--node-name) whose data dir holds the
-- volume's ext4 image. In a cluster a volume lives on one node: sandboxes
-- that mount it are placed there, and api replicas forward its
-- /volumecontent requests there. '' is a volume of a single box (sbx
-- serve --role all), usable wherever its image is; rows from before are ''.

-- +goose Up
ALTER TABLE volumes ADD COLUMN node_id TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE volumes DROP COLUMN node_id;
