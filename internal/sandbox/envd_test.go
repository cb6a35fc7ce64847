package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/agentauth"
	"github.com/sbxdev/sbx/internal/envd"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/sdk"
)

// serveUnix serves h on a unix socket at path until the test ends.
func serveUnix(t *testing.T, path string, h http.Handler) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// shortDir is a temp dir short enough for unix socket paths.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "agent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func mustKey(t *testing.T) agentauth.Key {
	t.Helper()
	k, err := agentauth.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// realEnvd serves internal/envd with the given ID and key in runDir.
func realEnvd(t *testing.T, runDir, id string, key agentauth.Key) {
	t.Helper()
	srv := envd.New(slog.New(slog.NewTextHandler(io.Discard, nil)), envd.Options{
		Getenv: func(k string) string {
			if k == "E2B_SANDBOX_ID" {
				return id
			}
			return ""
		},
		AgentKey: key,
	})
	t.Cleanup(srv.Close)
	serveUnix(t, filepath.Join(runDir, agentSocket), srv.SocketHandler())
}

// The host and envd prove the same key to each other; another key, on
// either side, fails the /init, and a clone's first /init hands it a key.
func TestAgentInitProves(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	runDir := shortDir(t)
	key := mustKey(t)
	realEnvd(t, runDir, "sbxa", key)

	if err := newAgent("sbxa", runDir, key).init(ctx, initRequest{AccessToken: "tok"}); err != nil {
		t.Fatalf("init with the sandbox's key: %v", err)
	}
	if err := newAgent("sbxa", runDir, mustKey(t)).init(ctx, initRequest{AccessToken: "evil"}); err == nil {
		t.Error("init with another key succeeded")
	}
	if err := newAgent("sbxb", runDir, key).init(ctx, initRequest{}); err == nil {
		t.Error("init addressed to another sandbox succeeded")
	}

	// A clone still holds the snapshot sandbox's ID and key.
	cloneDir := shortDir(t)
	realEnvd(t, cloneDir, "sbxsnap", key)
	own := mustKey(t)
	clone := newAgent("sbxclone", cloneDir, own)
	if err := clone.rekey(ctx, initRequest{AccessToken: "c"}, key); err != nil {
		t.Fatalf("rekeying init: %v", err)
	}
	if err := clone.init(ctx, initRequest{AccessToken: "c2"}); err != nil {
		t.Errorf("init with the clone's own key after the rekey: %v", err)
	}
	if err := newAgent("sbxclone", cloneDir, key).init(ctx, initRequest{}); err == nil {
		t.Error("the snapshot's key still initialises the clone")
	}
}

// Whatever answers without envd's proof is not taken for envd.
func TestAgentRejectsUnprovenAnswers(t *testing.T) {
	t.Parallel()
	runDir := shortDir(t)
	var hits atomic.Int32
	serveUnix(t, filepath.Join(runDir, agentSocket), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set(agentauth.HeaderProof, r.Header.Get(agentauth.HeaderProof)) // echoes the host's proof
		w.WriteHeader(http.StatusNoContent)
	}))
	err := newAgent("sbxa", runDir, mustKey(t)).init(t.Context(), initRequest{AccessToken: "tok"})
	if !errors.Is(err, ErrAgentUnproven) || hits.Load() != 1 {
		t.Errorf("init against a fake agent: %v (hits %d), want ErrAgentUnproven", err, hits.Load())
	}
}

// A link planted in the run dir in place of the socket is never followed,
// not by init, not by waitReady, not by the proxy's transport.
func TestAgentFollowsNoPlantedLink(t *testing.T) {
	t.Parallel()
	victimDir, runDir := shortDir(t), shortDir(t)
	key := mustKey(t)
	var hits atomic.Int32
	serveUnix(t, filepath.Join(victimDir, agentSocket), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	if err := os.Symlink(filepath.Join(victimDir, agentSocket), filepath.Join(runDir, agentSocket)); err != nil {
		t.Fatal(err)
	}
	a := newAgent("sbxa", runDir, key)
	if err := a.init(t.Context(), initRequest{AccessToken: "tok"}); err == nil {
		t.Error("init through a planted link succeeded")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := a.waitReady(ctx); err == nil {
		t.Error("waitReady accepted a planted link")
	}
	req, _ := http.NewRequest("GET", "http://envd/health", nil)
	if resp, err := a.transport.RoundTrip(req); err == nil {
		resp.Body.Close()
		t.Error("the proxy's transport dialled through a planted link")
	}
	if hits.Load() != 0 {
		t.Errorf("the socket behind the link got %d requests", hits.Load())
	}
}

// An agent announcing a 4 GiB frame fails the call at once, and a ready
// check does not retry it.
func TestAgentHugeFrame(t *testing.T) {
	t.Parallel()
	runDir := shortDir(t)
	var hits atomic.Int32
	serveUnix(t, filepath.Join(runDir, agentSocket), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/connect+json")
		w.Write([]byte{0, 0xff, 0xff, 0xff, 0xff})
		w.Write(make([]byte, 1<<20))
	}))
	a := newAgent("sbxa", runDir, mustKey(t))
	if _, err := a.run(t.Context(), "", "", "", "true"); !errors.Is(err, sdk.ErrMessageTooLarge) {
		t.Fatalf("run against a 4 GiB frame: %v, want ErrMessageTooLarge", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	before := hits.Load()
	t0 := time.Now()
	if err := a.waitCommand(ctx, "", "", "", "true"); !errors.Is(err, sdk.ErrMessageTooLarge) {
		t.Fatalf("waitCommand: %v, want ErrMessageTooLarge", err)
	}
	if time.Since(t0) > 5*time.Second || hits.Load()-before > 2 {
		t.Errorf("waitCommand retried a protocol violation: %d requests in %v", hits.Load()-before, time.Since(t0))
	}
	if _, err := a.start(t.Context(), "", "", "", "sleep 1", nil); !errors.Is(err, sdk.ErrMessageTooLarge) {
		t.Errorf("start against a 4 GiB frame: %v", err)
	}
}

func TestAgentBrokeIsAClientError(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("init: %w", ErrAgentUnproven), true},
		{fmt.Errorf("ready: %w", sdk.ErrMessageTooLarge), true},
		{errors.New("envd did not start listening"), false},
	} {
		m := &Manager{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		err := m.agentBroke("sbxa", tt.err)
		if got := errors.Is(err, errdefs.ErrFailedPrecondition); got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("agentBroke(%v) = %v", tt.err, err)
		}
	}
}

// waitReady returns once envd's socket appears and accepts, and gives up
// with the context.
func TestWaitReadyWakesOnTheSocket(t *testing.T) {
	t.Parallel()
	runDir := shortDir(t)
	a := newAgent("sbxw", runDir, mustKey(t))
	listening := make(chan net.Listener, 1)
	go func() {
		time.Sleep(30 * time.Millisecond) // envd still starting
		ln, _ := net.Listen("unix", filepath.Join(runDir, agentSocket))
		listening <- ln
	}()
	if err := a.waitReady(t.Context()); err != nil {
		t.Fatalf("waitReady: %v", err)
	}
	if ln := <-listening; ln != nil {
		ln.Close()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := newAgent("sbxx", shortDir(t), mustKey(t)).waitReady(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waitReady without envd = %v; want the context's deadline", err)
	}
}
