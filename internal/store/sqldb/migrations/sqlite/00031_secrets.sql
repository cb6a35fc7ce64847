-- Team secrets (E2B's /secrets). The value is AES-256-GCM ciphertext
-- (internal/secret; the key is a file in the data dir, never in the
-- database), bound to the team, the secret's ID and its version.

-- +goose Up
CREATE TABLE secrets (
	id         TEXT PRIMARY KEY,
	team_id    TEXT NOT NULL,
	name       TEXT NOT NULL,
	metadata   TEXT NOT NULL,
	version    BIGINT NOT NULL,
	ciphertext TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX secrets_team_name ON secrets(team_id, name);

-- +goose Down
DROP INDEX secrets_team_name;
DROP TABLE secrets;
