package sandbox

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/agentauth"
	"github.com/sbxdev/sbx/internal/hostfs"
	"github.com/sbxdev/sbx/sdk"
)

// agentSocket is envd's unix socket in the sandbox's run dir.
const agentSocket = "envd.sock"

// maxAgentMessage bounds one message the host reads from envd (a Connect
// envelope or a response body): the host only reads process events, whose
// output chunks are 32 KiB. A larger one fails the call at once, before
// anything is allocated (sdk.ErrMessageTooLarge).
const maxAgentMessage = 1 << 20

// agent is the host's side of one sandbox's envd. Its socket lives in the
// sandbox's run dir, which code in the sandbox can write: it is dialled
// through hostfs, which follows no link and connects only to a socket, and
// envd proves with the sandbox's agent key that it is the agent sbx
// started (agentauth). Its transport is also what the proxy uses, so
// keep-alive connections are shared.
type agent struct {
	id        string
	runDir    string
	transport *http.Transport
	client    *http.Client

	mu  sync.Mutex
	key agentauth.Key // the key envd holds now; zero for sandboxes from before keys
}

func newAgent(id, runDir string, key agentauth.Key) *agent {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return hostfs.DialUnix(ctx, runDir, agentSocket)
		},
		MaxIdleConnsPerHost:    64,
		IdleConnTimeout:        90 * time.Second,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 1 << 20,
	}
	return &agent{id: id, runDir: runDir, key: key, transport: tr, client: &http.Client{Transport: tr}}
}

func (a *agent) close() { a.transport.CloseIdleConnections() }

func (a *agent) roundTripper() http.RoundTripper { return a.transport }

func (a *agent) currentKey() agentauth.Key {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.key
}

// readyPoll bounds the wait between two looks for a starting envd's
// socket. envd listens 5-20 ms after the runtime returns (far more on a
// loaded host); each look is one fstatat on the run dir held open, so
// looking every millisecond costs next to nothing, where the doubling it
// replaced (up to 16 ms apart) left a ready sandbox unused for 8 ms on
// average.
const readyPoll = time.Millisecond

// waitReady waits until envd accepts connections on its socket: it looks
// for the socket with one cheap syscall per try and dials only once it is
// there (dialing costs an open of the dir, of the socket and a connect).
// An inotify watch on the run dir wakes it as soon as the socket is made;
// without one (or for a socket not yet listening) it looks again every
// readyPoll at most.
func (a *agent) waitReady(ctx context.Context) error {
	delay := 250 * time.Microsecond
	var d *hostfs.Dir
	var w *hostfs.Watch
	defer func() {
		if w != nil {
			// Releasing an inotify instance waits for an SRCU grace
			// period (10-20 ms here): off the start's path.
			go w.Close()
		}
		if d != nil {
			d.Close()
		}
	}()
	for {
		var err error
		if d == nil {
			if d, err = hostfs.OpenDir(a.runDir); err == nil {
				w, _ = d.Watch() // before the look below: no creation is missed
			}
		}
		if d != nil {
			var st unix.Stat_t
			if st, err = d.Lstat(agentSocket); err == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
				var c net.Conn
				if c, err = d.DialUnix(ctx, agentSocket); err == nil {
					c.Close()
					return nil
				}
				// Bound, not listening yet: envd listens right after it
				// binds, and no event tells when; look again soon.
				delay = min(delay, 100*time.Microsecond)
			}
		}
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("envd did not start listening on %s/%s (last error: %v): %w", a.runDir, agentSocket, err, cerr)
		}
		if w != nil {
			w.Wait(delay)
		} else {
			select {
			case <-ctx.Done():
			case <-time.After(delay):
			}
		}
		delay = min(2*delay, readyPoll)
	}
}

type initRequest struct {
	EnvVars        map[string]string `json:"envVars,omitempty"`
	AccessToken    string            `json:"accessToken,omitempty"`
	Timestamp      string            `json:"timestamp"`
	DefaultUser    string            `json:"defaultUser,omitempty"`
	DefaultWorkdir string            `json:"defaultWorkdir,omitempty"`
}

// ErrAgentUnproven is wrapped by the error of an /init whose answer does
// not prove the sandbox's agent key: whatever answered on the sandbox's
// socket is not the envd sbx started there.
var ErrAgentUnproven = errors.New("the sandbox's agent did not prove its key")

// init configures envd (env vars, access token, default user and
// workdir), proving the host's key and checking envd's proof in return.
func (a *agent) init(ctx context.Context, r initRequest) error {
	key := a.currentKey()
	return a.post(ctx, r, key, nil)
}

// rekey is the first /init of a sandbox restored from a template
// snapshot: its envd still holds the snapshot sandbox's key, which proves
// this request, and receives the sandbox's own key (the agent's), wrapped
// so that only a holder of the snapshot's key can read it.
func (a *agent) rekey(ctx context.Context, r initRequest, snapKey agentauth.Key) error {
	next := a.currentKey()
	return a.post(ctx, r, snapKey, &next)
}

func (a *agent) post(ctx context.Context, r initRequest, key agentauth.Key, next *agentauth.Key) error {
	r.Timestamp = time.Now().UTC().Format(time.RFC3339Nano)
	body, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("envd /init: %w", err)
	}
	nonce, err := agentauth.NewNonce()
	if err != nil {
		return fmt.Errorf("envd /init: %w", err)
	}
	var rekey []byte
	if next != nil {
		rekey = agentauth.Wrap(key, a.id, nonce, *next)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://envd/init", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("envd /init: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(agentauth.HeaderID, a.id)
	req.Header.Set(agentauth.HeaderNonce, hex.EncodeToString(nonce))
	req.Header.Set(agentauth.HeaderProof, hex.EncodeToString(agentauth.InitProof(key, a.id, nonce, body, rekey)))
	if rekey != nil {
		req.Header.Set(agentauth.HeaderRekey, hex.EncodeToString(rekey))
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("envd /init: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("envd /init: %s: %s", resp.Status, b)
	}
	if err := agentauth.Verify(resp.Header.Get(agentauth.HeaderProof), agentauth.ReplyProof(key, a.id, nonce)); err != nil {
		return fmt.Errorf("envd /init of sandbox %s: %w: whatever answers on its socket is not the agent sbx started there", a.id, ErrAgentUnproven)
	}
	return nil
}

// envd is the SDK's Connect client of this sandbox's envd, over its
// socket, with the host's message cap: the one client the host speaks
// envd's protocol with.
func (a *agent) envd(token string) (*sdk.Sandbox, error) {
	return sdk.NewEnvd(sdk.EnvdConfig{URL: "http://envd", HTTPClient: a.client, SandboxID: a.id,
		AccessToken: token, MaxMessageBytes: maxAgentMessage})
}

// outputTail bounds what the host keeps of a command's output.
const outputTail = 2048

// run runs cmd to completion and returns its exit code.
func (a *agent) run(ctx context.Context, token, user, cwd, cmd string) (int, error) {
	sb, err := a.envd(token)
	if err != nil {
		return -1, err
	}
	res, err := sb.Commands.Run(ctx, cmd, sdk.RunOptions{User: user, Cwd: cwd, OutputLimit: outputTail})
	var exit *sdk.CommandExitError
	switch {
	case errors.As(err, &exit):
		return exit.ExitCode, nil
	case err != nil:
		return -1, fmt.Errorf("command %q: %w", cmd, err)
	}
	return res.ExitCode, nil
}

// waitCommand polls a ready command until it exits 0 (E2B's readyCmd). An
// agent that breaks the protocol ends the wait at once.
func (a *agent) waitCommand(ctx context.Context, token, user, cwd, cmd string) error {
	delay := 20 * time.Millisecond
	for {
		code, err := a.run(ctx, token, user, cwd, cmd)
		if err == nil && code == 0 {
			return nil
		}
		if errors.Is(err, sdk.ErrMessageTooLarge) {
			return fmt.Errorf("ready command %q: %w", cmd, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ready command %q did not succeed (last exit code %d, error %v): %w", cmd, code, err, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}

// startEnd is how a start command's stream ended: its exit code and the
// last of its output, or the error that ended the stream.
type startEnd struct {
	code int
	tail string
	err  error
}

// started is a start command running in the background.
type started struct {
	h    *sdk.CommandHandle
	mu   sync.Mutex
	tail []byte // the last outputTail bytes of stdout and stderr, interleaved
}

// start starts cmd and returns once envd reported it started; the
// process runs on its own after that, and disconnect does not stop it.
//
// sink, when set, also gets each chunk of output as it arrives, by stream
// (stdout, stderr), until disconnect.
func (a *agent) start(ctx context.Context, token, user, cwd, cmd string, sink func(stream, chunk string)) (startedCmd, error) {
	sb, err := a.envd(token)
	if err != nil {
		return nil, err
	}
	s := &started{}
	add := func(chunk string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.tail = append(s.tail, chunk...)
		if len(s.tail) > outputTail {
			s.tail = append(s.tail[:0], s.tail[len(s.tail)-outputTail:]...)
		}
	}
	// The callbacks keep the interleaved tail; the handle itself keeps
	// next to nothing of a command that may print for as long as it runs.
	if sink == nil {
		sink = func(string, string) {}
	}
	s.h, err = sb.Commands.Start(ctx, cmd, sdk.RunOptions{User: user, Cwd: cwd, OutputLimit: 1,
		OnStdout: func(c string) { add(c); sink("stdout", c) }, OnStderr: func(c string) { add(c); sink("stderr", c) }})
	if err != nil {
		return nil, fmt.Errorf("start command %q: %w", cmd, err)
	}
	return s, nil
}

// end waits until the command's stream ends (or ctx does).
func (s *started) end(ctx context.Context) startEnd {
	res, err := s.h.Wait(ctx)
	s.mu.Lock()
	tail := string(s.tail)
	s.mu.Unlock()
	var exit *sdk.CommandExitError
	switch {
	case errors.As(err, &exit):
		return startEnd{code: exit.ExitCode, tail: tail}
	case err != nil:
		return startEnd{code: -1, tail: tail, err: err}
	}
	return startEnd{code: res.ExitCode, tail: tail}
}

// disconnect stops reading the command's stream; the process keeps running.
func (s *started) disconnect() { s.h.Disconnect() }

// waitPort polls GET /health on a port inside the sandbox until it answers 200.
func (a *agent) waitPort(ctx context.Context, token string, port int) error {
	delay := 2 * time.Millisecond
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://envd/health", nil)
		if err != nil {
			return err
		}
		req.Header.Set("X-Sbx-Port", fmt.Sprint(port))
		req.Header.Set("X-Access-Token", token)
		resp, err := a.client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("port %d inside the sandbox did not become ready: %w", port, ctx.Err())
		case <-time.After(delay):
		}
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
}
