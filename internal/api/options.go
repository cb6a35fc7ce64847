package api

import (
	"encoding/json"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// unsupported refuses the create options sbx does not implement, naming
// them, rather than creating a sandbox without what the caller asked for.
//
// mcp is not among them: the E2B SDK starts the MCP gateway inside the
// sandbox itself (from a template named mcp-gateway); the server's copy of
// the configuration is informational.
func (b newSandbox) unsupported() error {
	if present(b.IAM) {
		return errdefs.Invalid("iam (workload identity tokens for the sandbox) is not supported by sbx: " +
			"pass credentials to the sandbox in envVars, or through sbx secrets")
	}
	return nil
}

// present reports whether an optional JSON field was sent with a value.
func present(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }
