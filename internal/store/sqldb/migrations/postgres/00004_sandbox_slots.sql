-- Admission across servers (issue 15): a create reserves one of its team's
-- sandbox slots here, under a per-team lock, before any work; the slot is
-- released once the sandbox row exists (or the create failed). A server
-- that dies leaves its reservations to expire.

-- +goose Up
CREATE TABLE sandbox_slots (
	id         TEXT PRIMARY KEY,
	team_id    TEXT NOT NULL,
	node_id    TEXT NOT NULL,
	expires_at BIGINT NOT NULL
);
CREATE INDEX sandbox_slots_team ON sandbox_slots(team_id, expires_at);

-- +goose Down
DROP TABLE sandbox_slots;
