-- Webhook deliveries across several servers (issue 15): each (webhook,
-- event) delivery exists once, and one server at a time holds a lease on a
-- webhook's queue, sends its deliveries in order and renews the lease;
-- when the server dies the lease runs out and another takes the queue over.
-- Test pings (event_seq 0) are not part of any queue.

-- +goose Up
-- Older releases could fan an event out twice after a crash; keep the
-- first delivery of each pair so the unique index can be built.
DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE event_seq > 0 AND rid NOT IN
	(SELECT MIN(rid) FROM webhook_deliveries WHERE event_seq > 0 GROUP BY webhook_id, event_seq));
DELETE FROM webhook_deliveries WHERE event_seq > 0 AND rid NOT IN
	(SELECT MIN(rid) FROM webhook_deliveries WHERE event_seq > 0 GROUP BY webhook_id, event_seq);
CREATE UNIQUE INDEX webhook_deliveries_once ON webhook_deliveries(webhook_id, event_seq) WHERE event_seq > 0;
-- A queue's pending deliveries in order: what claims look for and load.
CREATE INDEX webhook_deliveries_queue ON webhook_deliveries(webhook_id, state, event_seq);
-- A redelivery asked for by a user goes out even to a disabled webhook.
ALTER TABLE webhook_deliveries ADD COLUMN forced INTEGER NOT NULL DEFAULT 0;
-- The lease on the webhook's queue: the node holding it, that node's
-- process (a restarted node takes its own leases back at once), and until
-- when (Unix ns).
ALTER TABLE webhooks ADD COLUMN lease_node TEXT NOT NULL DEFAULT '';
ALTER TABLE webhooks ADD COLUMN lease_boot TEXT NOT NULL DEFAULT '';
ALTER TABLE webhooks ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE webhooks DROP COLUMN lease_until;
ALTER TABLE webhooks DROP COLUMN lease_boot;
ALTER TABLE webhooks DROP COLUMN lease_node;
ALTER TABLE webhook_deliveries DROP COLUMN forced;
DROP INDEX webhook_deliveries_queue;
DROP INDEX webhook_deliveries_once;
