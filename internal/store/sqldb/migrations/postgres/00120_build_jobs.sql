-- Template builds as jobs (cluster roles): an api replica queues a build
-- (job_state 'queued', node_id ''), one node claims it with a conditional
-- update (job_state 'claimed', node_id the claimer, claim_until a lease it
-- renews while it builds) and finishes it only while it still holds the
-- claim ('done'). A claim whose lease ran out (its node died) is taken by
-- another node; claims counts the attempts so a build that kills every
-- node that tries it ends in error. job_state '' is a build run where it
-- was accepted (one box), as before. claim_until is Unix milliseconds.
--
-- tpl_uploads: the files of COPY steps, one row per (team, files hash),
-- kept in the blob store (blob_digest: the files as a layer tar) so the
-- node that claims a build reads them whichever replica received them;
-- content_digest is the digest of what they unpack to (paths, types,
-- modes, contents), which a second upload of the hash must match.

-- +goose Up
ALTER TABLE tpl_builds ADD COLUMN job_state TEXT NOT NULL DEFAULT '';
ALTER TABLE tpl_builds ADD COLUMN claim_until BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tpl_builds ADD COLUMN claims INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tpl_builds_job ON tpl_builds (job_state, claim_until);
CREATE TABLE tpl_uploads (
	team_id        TEXT NOT NULL,
	files_hash     TEXT NOT NULL,
	blob_digest    TEXT NOT NULL,
	content_digest TEXT NOT NULL,
	entries        BIGINT NOT NULL DEFAULT 0,
	created_at     BIGINT NOT NULL,
	PRIMARY KEY (team_id, files_hash)
);

-- +goose Down
DROP TABLE tpl_uploads;
DROP INDEX tpl_builds_job;
ALTER TABLE tpl_builds DROP COLUMN claims;
ALTER TABLE tpl_builds DROP COLUMN claim_until;
ALTER TABLE tpl_builds DROP COLUMN job_state;
