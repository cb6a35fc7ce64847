-- A sandbox's network settings as asked for at create or by PUT
-- /sandboxes/{id}/network (E2B's SandboxNetworkConfig, as JSON), and the
-- token its non-agent ports require when public traffic is off. The
-- egress policy itself is applied by the server that runs the sandbox.

-- +goose Up
CREATE TABLE sandbox_networks (
	sandbox_id    TEXT PRIMARY KEY,
	config        TEXT NOT NULL,
	traffic_token TEXT NOT NULL DEFAULT ''
);

-- +goose Down
DROP TABLE sandbox_networks;
