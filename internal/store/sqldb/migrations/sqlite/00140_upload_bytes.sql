-- tpl_uploads.bytes: what an upload unpacked to (regular file content),
-- summed per team against the cap on the build-context bytes a team holds
-- in the shared blob store (sbx serve --upload-bytes-per-team). Rows from
-- before count 0 and age out with the rest. The index on created_at finds
-- the uploads past retention that the pruning loop deletes.

-- +goose Up
ALTER TABLE tpl_uploads ADD COLUMN bytes BIGINT NOT NULL DEFAULT 0;
CREATE INDEX tpl_uploads_created ON tpl_uploads (created_at);

-- +goose Down
DROP INDEX tpl_uploads_created;
ALTER TABLE tpl_uploads DROP COLUMN bytes;
