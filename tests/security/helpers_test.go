package security

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/sdk"
	"github.com/sbxdev/sbx/tests/harness"
)

// opWait bounds one SDK call; it only turns a hang into a clear failure.
const opWait = 2 * time.Minute

func opCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), opWait)
	t.Cleanup(cancel)
	return ctx
}

// startServer starts a fresh `bin/sbx serve` for one test.
func startServer(t testing.TB, extra ...string) *harness.Server {
	t.Helper()
	return harness.StartServer(t, extra...)
}

// create starts a sandbox and kills it at cleanup.
func create(t testing.TB, c *sdk.Client, opts sdk.CreateOptions) *sdk.Sandbox {
	t.Helper()
	s, err := c.Create(opCtx(t), opts)
	if err != nil {
		t.Fatalf("create sandbox: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opWait)
		defer cancel()
		_ = s.Kill(ctx)
	})
	return s
}

// sh runs cmd with bash in the sandbox as user ("" = the default user,
// "root" = root) and returns the result whatever the exit code.
func sh(t testing.TB, s *sdk.Sandbox, user, cmd string) *sdk.CommandResult {
	t.Helper()
	res, err := s.Commands.Run(opCtx(t), cmd, sdk.RunOptions{User: user})
	var exit *sdk.CommandExitError
	if errors.As(err, &exit) {
		return exit.CommandResult
	}
	if err != nil {
		t.Fatalf("run %q in sandbox %s: %v", cmd, s.ID, err)
	}
	return res
}

// mustSh is sh that fails the test unless cmd exits 0.
func mustSh(t testing.TB, s *sdk.Sandbox, user, cmd string) string {
	t.Helper()
	res := sh(t, s, user, cmd)
	if res.ExitCode != 0 {
		t.Fatalf("%q in sandbox %s exited %d\nstdout: %s\nstderr: %s", cmd, s.ID, res.ExitCode, res.Stdout, res.Stderr)
	}
	return res.Stdout
}

func randHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// hostMirror is the host's Debian mirror (harness.Mirror): its host name
// and one of its addresses.
func hostMirror(t testing.TB) (host, addr string) {
	t.Helper()
	host, addrs := harness.Mirror(t)
	return host, addrs[0]
}

// reachesPort80 reports whether a TCP connection from the sandbox (as
// root) to addr:80 opens.
func reachesPort80(t testing.TB, s *sdk.Sandbox, addr string) bool {
	t.Helper()
	out := sh(t, s, "root", fmt.Sprintf(`python3 -c "import socket; socket.create_connection(('%s', 80), 2); print('open')"`, addr))
	return strings.Contains(out.Stdout, "open")
}
