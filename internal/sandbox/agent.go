package sandbox

import (
	"context"
	"net/http"

	"github.com/sbxdev/sbx/internal/agentauth"
)

// agentConn is what the manager asks of a sandbox's envd: the real one is
// agent (envd.go), over the sandbox's socket with the agent-key proof. The
// lifecycle reaches envd only through it, so create, kill and timeouts can
// be tested without root: a fake answers for a sandbox no runtime started
// (manager_test.go).
type agentConn interface {
	// waitReady waits until envd accepts connections.
	waitReady(ctx context.Context) error
	// init configures envd (env vars, token, defaults), each side proving
	// the current key; rekey does so for a clone of a template snapshot,
	// whose envd still holds snapKey, and hands it the current key.
	init(ctx context.Context, r initRequest) error
	rekey(ctx context.Context, r initRequest, snapKey agentauth.Key) error
	// currentKey is the key envd holds now (snapshots copy it).
	currentKey() agentauth.Key
	// start starts cmd in the background (the template's start command),
	// feeding its output to sink; waitPort and waitCommand are its ready
	// checks.
	start(ctx context.Context, token, user, cwd, cmd string, sink func(stream, chunk string)) (startedCmd, error)
	waitPort(ctx context.Context, token string, port int) error
	waitCommand(ctx context.Context, token, user, cwd, cmd string) error
	// roundTripper reaches envd and the sandbox's ports (the proxy).
	roundTripper() http.RoundTripper
	// close drops idle connections (before a pause, checkpoint or kill).
	close()
}

// startedCmd is a start command running in the background.
type startedCmd interface {
	// end waits until the command's stream ends (or ctx does).
	end(ctx context.Context) startEnd
	// disconnect stops reading the stream; the process keeps running.
	disconnect()
}

// agentDialer makes the agentConn of a sandbox whose envd listens in
// runDir and holds key.
type agentDialer func(id, runDir string, key agentauth.Key) agentConn

func dialAgent(id, runDir string, key agentauth.Key) agentConn { return newAgent(id, runDir, key) }

var (
	_ agentConn  = (*agent)(nil)
	_ startedCmd = (*started)(nil)
)
