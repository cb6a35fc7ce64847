package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// agent talks to one sandbox's envd over its unix socket. Its transport is
// also what the proxy uses, so keep-alive connections are shared.
type agent struct {
	socket    string
	transport *http.Transport
	client    *http.Client
}

func newAgent(socket string) *agent {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &agent{socket: socket, transport: tr, client: &http.Client{Transport: tr}}
}

func (a *agent) close() { a.transport.CloseIdleConnections() }

// waitReady polls until envd accepts connections on its socket.
func (a *agent) waitReady(ctx context.Context) error {
	delay := 500 * time.Microsecond
	for {
		if _, err := os.Stat(a.socket); err == nil {
			c, err := net.Dial("unix", a.socket)
			if err == nil {
				c.Close()
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("envd did not start listening on %s: %w", a.socket, ctx.Err())
		case <-time.After(delay):
		}
		if delay < 10*time.Millisecond {
			delay *= 2
		}
	}
}

type initRequest struct {
	EnvVars        map[string]string `json:"envVars,omitempty"`
	AccessToken    string            `json:"accessToken,omitempty"`
	Timestamp      string            `json:"timestamp"`
	DefaultUser    string            `json:"defaultUser,omitempty"`
	DefaultWorkdir string            `json:"defaultWorkdir,omitempty"`
}

func (a *agent) do(ctx context.Context, method, path string, body any, hdr http.Header) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://envd"+path, rd)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return a.client.Do(req)
}

// init configures envd: env vars, access token, default user and workdir.
func (a *agent) init(ctx context.Context, r initRequest) error {
	r.Timestamp = time.Now().UTC().Format(time.RFC3339Nano)
	resp, err := a.do(ctx, http.MethodPost, "/init", r, nil)
	if err != nil {
		return fmt.Errorf("envd /init: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("envd /init: %s: %s", resp.Status, b)
	}
	return nil
}

// run runs cmd to completion and returns its exit code.
func (a *agent) run(ctx context.Context, token, user, cwd, cmd string) (int, error) {
	resp, err := a.startStream(ctx, token, user, cwd, cmd)
	if err != nil {
		return -1, err
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for {
		var head [5]byte
		if _, err := io.ReadFull(br, head[:]); err != nil {
			return -1, fmt.Errorf("command %q: stream ended without a result: %w", cmd, err)
		}
		msg := make([]byte, binary.BigEndian.Uint32(head[1:]))
		if _, err := io.ReadFull(br, msg); err != nil {
			return -1, fmt.Errorf("command %q: %w", cmd, err)
		}
		if head[0]&0x02 != 0 {
			return -1, fmt.Errorf("command %q: stream ended without a result: %s", cmd, msg)
		}
		var ev struct {
			Event struct {
				End *struct {
					ExitCode int `json:"exitCode"`
				} `json:"end"`
			} `json:"event"`
		}
		if json.Unmarshal(msg, &ev) == nil && ev.Event.End != nil {
			return ev.Event.End.ExitCode, nil
		}
	}
}

// waitCommand polls a ready command until it exits 0 (E2B's readyCmd).
func (a *agent) waitCommand(ctx context.Context, token, user, cwd, cmd string) error {
	delay := 20 * time.Millisecond
	for {
		code, err := a.run(ctx, token, user, cwd, cmd)
		if err == nil && code == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ready command %q did not succeed (last exit code %d, error %v): %w", cmd, code, err, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}

// startStream starts cmd and returns the stream after its start event.
func (a *agent) startStream(ctx context.Context, token, user, cwd, cmd string) (*http.Response, error) {
	msg, _ := json.Marshal(map[string]any{
		"process": map[string]any{"cmd": "/bin/bash", "args": []string{"-l", "-c", cmd}, "cwd": cwd},
		"stdin":   false,
	})
	var env bytes.Buffer
	env.WriteByte(0)
	_ = binary.Write(&env, binary.BigEndian, uint32(len(msg)))
	env.Write(msg)
	hdr := http.Header{
		"Content-Type":             {"application/connect+json"},
		"Connect-Protocol-Version": {"1"},
		"X-Access-Token":           {token},
		"Authorization":            {basicUser(user)},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://envd/process.Process/Start", &env)
	if err != nil {
		return nil, err
	}
	req.Header = hdr
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("start command %q: %w", cmd, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("start command %q: %s: %s", cmd, resp.Status, b)
	}
	// The first envelope is the start event; after it the process runs on
	// its own and closing the stream does not stop it.
	var head [5]byte
	if _, err := io.ReadFull(resp.Body, head[:]); err != nil {
		resp.Body.Close()
		return nil, fmt.Errorf("start command %q: no start event: %w", cmd, err)
	}
	first := make([]byte, binary.BigEndian.Uint32(head[1:]))
	if _, err := io.ReadFull(resp.Body, first); err != nil || head[0]&0x02 != 0 {
		resp.Body.Close()
		return nil, fmt.Errorf("start command %q failed: %s %v", cmd, first, err)
	}
	return resp, nil
}

// startEnd is how a start command's stream ended: its exit code and the
// last of its output, or the error that ended the stream.
type startEnd struct {
	code int
	tail string
	err  error
}

// watchEnd reads a started command's stream until its end event and sends
// the result once. Closing resp.Body stops it; the process keeps running.
func watchEnd(resp *http.Response) <-chan startEnd {
	ch := make(chan startEnd, 1)
	go func() {
		br := bufio.NewReader(resp.Body)
		var tail []byte
		for {
			var head [5]byte
			if _, err := io.ReadFull(br, head[:]); err != nil {
				ch <- startEnd{code: -1, tail: string(tail), err: err}
				return
			}
			msg := make([]byte, binary.BigEndian.Uint32(head[1:]))
			if _, err := io.ReadFull(br, msg); err != nil {
				ch <- startEnd{code: -1, tail: string(tail), err: err}
				return
			}
			var ev struct {
				Event struct {
					Data *struct {
						Stdout []byte `json:"stdout"`
						Stderr []byte `json:"stderr"`
					} `json:"data"`
					End *struct {
						ExitCode int `json:"exitCode"`
					} `json:"end"`
				} `json:"event"`
			}
			if json.Unmarshal(msg, &ev) != nil {
				continue
			}
			if d := ev.Event.Data; d != nil {
				tail = append(tail, d.Stdout...)
				tail = append(tail, d.Stderr...)
				if len(tail) > 2048 {
					tail = tail[len(tail)-2048:]
				}
			}
			if ev.Event.End != nil {
				ch <- startEnd{code: ev.Event.End.ExitCode, tail: string(tail)}
				return
			}
		}
	}()
	return ch
}

// waitPort polls GET /health on a port inside the sandbox until it answers 200.
func (a *agent) waitPort(ctx context.Context, token string, port int) error {
	delay := 2 * time.Millisecond
	for {
		resp, err := a.do(ctx, http.MethodGet, "/health", nil, http.Header{
			"X-Sbx-Port": {fmt.Sprint(port)}, "X-Access-Token": {token}})
		if err == nil {
			io.Copy(io.Discard, resp.Body)
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

func basicUser(user string) string {
	return "Basic " + base64Std(user+":")
}
