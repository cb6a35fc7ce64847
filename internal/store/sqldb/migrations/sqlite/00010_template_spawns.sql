-- How often each template was used to create a sandbox, and when last
-- (E2B's spawnCount and lastSpawnedAt). A table of its own rather than
-- columns of tpl_templates: built-in templates have no row there.

-- +goose Up
CREATE TABLE template_spawns (
	template_id     TEXT PRIMARY KEY,
	spawn_count     BIGINT NOT NULL DEFAULT 0,
	last_spawned_at BIGINT NOT NULL DEFAULT 0
);

-- +goose Down
DROP TABLE template_spawns;
