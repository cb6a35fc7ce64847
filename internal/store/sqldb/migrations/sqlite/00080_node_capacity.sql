-- Nodes of a cluster (sbx serve --role node) say in each heartbeat where
-- api replicas reach them (advertise_url) and how full they are, so an
-- api replica places a new sandbox from the rows alone (internal/placement)
-- without asking every node. CPU in millicores, memory in MiB; reserved is
-- what the node's sandboxes hold. A --role all server records the same.

-- +goose Up
ALTER TABLE nodes ADD COLUMN advertise_url TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN cpu_millis BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN memory_mib BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN reserved_cpu_millis BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN reserved_memory_mib BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN sandboxes BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE nodes DROP COLUMN sandboxes;
ALTER TABLE nodes DROP COLUMN reserved_memory_mib;
ALTER TABLE nodes DROP COLUMN reserved_cpu_millis;
ALTER TABLE nodes DROP COLUMN memory_mib;
ALTER TABLE nodes DROP COLUMN cpu_millis;
ALTER TABLE nodes DROP COLUMN advertise_url;
