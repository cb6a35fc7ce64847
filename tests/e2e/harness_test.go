package e2e

import (
	"testing"

	"github.com/sbxdev/sbx/tests/harness"
)

// The server harness is shared with the red-team tests (tests/security).
type (
	Server      = harness.Server
	rawResponse = harness.RawResponse
)

// StartServer starts a fresh `bin/sbx serve`; see harness.StartServer.
func StartServer(t testing.TB, extra ...string) *Server { return harness.StartServer(t, extra...) }
