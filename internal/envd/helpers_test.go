package envd

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/agentauth"
	"github.com/sbxdev/sbx/internal/testenv"
)

// requireRoot skips a test that needs root, or fails it under
// SBX_REQUIRE_INTEGRATION=1 so CI cannot pass by skipping.
func requireRoot(t testing.TB) {
	t.Helper()
	testenv.Require(t, testenv.Root) // to run processes as another user
}

// env is a running envd: its TCP handler and its host socket.
type env struct {
	srv    *Server
	url    string // TCP listener
	socket string // unix socket listener
	sock   *http.Client
	now    time.Time
	id     string        // the sandbox ID envd answers for
	key    agentauth.Key // its agent key, which the host's /init proves
}

func newEnv(t testing.TB, getenv map[string]string) *env {
	t.Helper()
	return newEnvOpts(t, getenv, Options{})
}

// newEnvOpts is newEnv with more options; Getenv, Now and AgentKey are
// the env's own.
func newEnvOpts(t testing.TB, getenv map[string]string, opts Options) *env {
	t.Helper()
	e := &env{now: time.Unix(1_800_000_000, 0), id: getenv["E2B_SANDBOX_ID"]}
	if _, err := rand.Read(e.key[:]); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	opts.Getenv = func(k string) string { return getenv[k] }
	opts.Now = func() time.Time { return e.now }
	opts.AgentKey = e.key
	e.srv = New(log, opts)
	t.Cleanup(e.srv.Close)
	ts := httptest.NewServer(e.srv.Handler())
	t.Cleanup(ts.Close)
	e.url = ts.URL

	// Unix socket paths are limited to 108 bytes; t.TempDir can be longer.
	dir, err := os.MkdirTemp("", "envd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e.socket = filepath.Join(dir, "envd.sock")
	ln, err := net.Listen("unix", e.socket)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: e.srv.SocketHandler()}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	e.sock = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", e.socket)
		},
	}}
	return e
}

// call makes a unary RPC; it returns the status and decodes the body into out.
func (e *env) call(t testing.TB, method string, req any, out any, hdr ...string) int {
	t.Helper()
	b, _ := json.Marshal(req)
	r, _ := http.NewRequest("POST", e.url+"/"+method, bytes.NewReader(b))
	r.Header.Set("Content-Type", "application/json")
	setHeaders(r, hdr)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s: decode %q: %v", method, body, err)
		}
	}
	return resp.StatusCode
}

func setHeaders(r *http.Request, hdr []string) {
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
}

func basic(user string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"))
}

// stream is an open server stream.
type stream struct {
	t    testing.TB
	body io.ReadCloser
}

func (e *env) stream(t testing.TB, method string, req any, hdr ...string) *stream {
	t.Helper()
	b, _ := json.Marshal(req)
	var env []byte
	env = append(env, 0, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(env[1:], uint32(len(b)))
	env = append(env, b...)
	r, _ := http.NewRequestWithContext(t.Context(), "POST", e.url+"/"+method, bytes.NewReader(env))
	r.Header.Set("Content-Type", "application/connect+json")
	setHeaders(r, hdr)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		t.Fatalf("%s: status %d", method, resp.StatusCode)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return &stream{t: t, body: resp.Body}
}

// msg is one stream message: payload and whether it ended the stream.
type msg struct {
	end  bool
	data map[string]any
	raw  string
}

// next reads the next envelope; it fails the test at EOF.
func (s *stream) next() msg {
	s.t.Helper()
	var hdr [5]byte
	if _, err := io.ReadFull(s.body, hdr[:]); err != nil {
		s.t.Fatalf("read envelope: %v", err)
	}
	payload := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
	if _, err := io.ReadFull(s.body, payload); err != nil {
		s.t.Fatalf("read envelope body: %v", err)
	}
	m := msg{end: hdr[0]&2 != 0, raw: string(payload)}
	if err := json.Unmarshal(payload, &m.data); err != nil {
		s.t.Fatalf("decode %q: %v", payload, err)
	}
	return m
}

// result collects a process stream to its end.
type result struct {
	pid            float64
	stdout, stderr string
	pty            string
	end            map[string]any
	trailer        msg
	keepalives     int
}

// event returns the oneof field name and value of a ProcessEvent message.
func event(m msg) (string, map[string]any) {
	ev, _ := m.data["event"].(map[string]any)
	for k, v := range ev {
		vm, _ := v.(map[string]any)
		return k, vm
	}
	return "", nil
}

func b64(v any) string {
	s, _ := v.(string)
	b, _ := base64.StdEncoding.DecodeString(s)
	return string(b)
}

// start reads the start event and returns the pid.
func (s *stream) start() uint32 {
	s.t.Helper()
	m := s.next()
	kind, v := event(m)
	if kind != "start" {
		s.t.Fatalf("first message %s, want start event", m.raw)
	}
	return uint32(v["pid"].(float64))
}

// collect reads data events up to the end of the stream.
func (s *stream) collect() result {
	s.t.Helper()
	var r result
	for {
		m := s.next()
		if m.end {
			r.trailer = m
			return r
		}
		kind, v := event(m)
		switch kind {
		case "data":
			r.stdout += b64(v["stdout"])
			r.stderr += b64(v["stderr"])
			r.pty += b64(v["pty"])
		case "end":
			r.end = v
		case "keepalive":
			r.keepalives++
		default:
			s.t.Fatalf("unexpected message %s", m.raw)
		}
	}
}

// run starts cmd with /bin/sh -c and collects the whole stream.
func (e *env) run(t testing.TB, script string, extra map[string]any, hdr ...string) result {
	t.Helper()
	proc := map[string]any{"cmd": "/bin/sh", "args": []string{"-c", script}}
	req := map[string]any{"process": proc, "stdin": false}
	for k, v := range extra {
		if k == "envs" || k == "cwd" {
			proc[k] = v
		} else {
			req[k] = v
		}
	}
	s := e.stream(t, "process.Process/Start", req, hdr...)
	pid := s.start()
	r := s.collect()
	r.pid = float64(pid)
	return r
}

// waitFor retries cond until it holds or the test's patience runs out.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// addUser creates a throwaway account and removes it after the test.
func addUser(t testing.TB, name string) {
	t.Helper()
	requireRoot(t)
	testenv.Require(t, testenv.Binary("useradd", "apt-get install passwd"))
	_ = exec.Command("userdel", "-r", name).Run()
	if out, err := exec.Command("useradd", "-m", "-s", "/bin/sh", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("userdel", "-r", "-f", name).Run() })
}

func has(s, sub string) bool { return strings.Contains(s, sub) }

// do sends a plain HTTP request to the TCP listener.
func (e *env) do(t testing.TB, method, path string, body io.Reader, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	r, _ := http.NewRequest(method, e.url+path, body)
	setHeaders(r, hdr)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// post sends JSON to path over the host socket and returns the status.
func (e *env) post(t testing.TB, path, body string, hdr ...string) int {
	t.Helper()
	r, _ := http.NewRequest("POST", "http://envd"+path, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if path == "/init" {
		e.sign(t, r, body)
	}
	setHeaders(r, hdr)
	resp, err := e.sock.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// sign adds the host's agent proof to an /init request, as the host does.
func (e *env) sign(t testing.TB, r *http.Request, body string) []byte {
	t.Helper()
	nonce := make([]byte, agentauth.NonceSize)
	if _, err := rand.Read(nonce); err != nil {
		t.Fatal(err)
	}
	r.Header.Set(agentauth.HeaderID, e.id)
	r.Header.Set(agentauth.HeaderNonce, hex.EncodeToString(nonce))
	r.Header.Set(agentauth.HeaderProof, hex.EncodeToString(agentauth.InitProof(e.key, e.id, nonce, []byte(body), nil)))
	return nonce
}
