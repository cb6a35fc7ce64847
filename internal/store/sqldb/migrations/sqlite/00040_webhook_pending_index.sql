-- A webhook's pending deliveries in event order, indexed while pending
-- only: recording an outcome (pending -> success or failed) then adds no
-- entry to it, and the older (state, webhook_id) index, which served the
-- same queries, goes. Two fewer index entries per delivery recorded, on
-- the write every delivery makes.

-- +goose Up
DROP INDEX IF EXISTS webhook_deliveries_queue;
DROP INDEX IF EXISTS webhook_deliveries_pending;
CREATE INDEX webhook_deliveries_queue ON webhook_deliveries(webhook_id, event_seq) WHERE state = 'pending';

-- +goose Down
DROP INDEX IF EXISTS webhook_deliveries_queue;
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries(state, webhook_id);
CREATE INDEX webhook_deliveries_queue ON webhook_deliveries(webhook_id, state, event_seq);
