-- How often each template was used to create a sandbox, and when last
-- (E2B's spawnCount and lastSpawnedAt), is counted from the sandboxes
-- table, which keeps every sandbox's row: an index keeps that a scan of
-- the index, and a create pays no extra write for it.

-- +goose Up
CREATE INDEX sandboxes_template ON sandboxes(template_id, started_at);

-- +goose Down
DROP INDEX sandboxes_template;
