package sdk

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

const testKey = "e2b_0123456789abcdef0123456789abcdef01234567"

// newTestClient serves mux on a real HTTP listener and returns a client
// pointed at it for both the API and the sandbox traffic.
func newTestClient(t *testing.T, mux http.Handler) *Client {
	t.Helper()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	c, err := NewClient(Config{APIURL: srv.URL, SandboxURL: srv.URL, APIKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testSandbox(c *Client) *Sandbox {
	s, _ := c.newSandbox(sandboxJSON{SandboxID: "abc123", TemplateID: "base", EnvdAccessToken: "tok"})
	return s
}

func TestNewClientValidates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no key", Config{APIURL: DefaultURL}, "no API key"},
		{"relative URL", Config{APIURL: "localhost:3000", APIKey: testKey}, "want an absolute http(s) URL"},
		{"bad sandbox URL", Config{APIURL: DefaultURL, SandboxURL: "ftp://x", APIKey: testKey}, "invalid sandbox URL"},
		{"defaults", Config{APIKey: testKey}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewClient(tt.cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("NewClient: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewClient error = %v, want it to mention %q", err, tt.wantErr)
			}
		})
	}
}

func TestConfigFromEnv(t *testing.T) {
	tests := []struct {
		api, sandbox         string
		wantAPI, wantSandbox string
	}{
		{"", "", DefaultURL, DefaultURL},
		{"http://h:1", "", "http://h:1", "http://h:1"},
		{"http://h:1", "http://s:2", "http://h:1", "http://s:2"},
	}
	for _, tt := range tests {
		t.Setenv("E2B_API_URL", tt.api)
		t.Setenv("E2B_SANDBOX_URL", tt.sandbox)
		t.Setenv("E2B_API_KEY", "k")
		cfg := ConfigFromEnv()
		if cfg.APIURL != tt.wantAPI || cfg.SandboxURL != tt.wantSandbox || cfg.APIKey != "k" {
			t.Errorf("ConfigFromEnv with %q, %q = %+v", tt.api, tt.sandbox, cfg)
		}
	}
}

func TestCreateSendsE2BBody(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	var got map[string]any
	mux.HandleFunc("POST /v2/sandboxes", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-API-Key") != testKey {
			t.Errorf("X-API-Key = %q", r.Header.Get("X-API-Key"))
		}
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			t.Errorf("decode body: %v", err)
		}
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"templateID":"base","sandboxID":"s1","clientID":"n","envdVersion":"0.6.13","envdAccessToken":"tok"}`)
	})
	c := newTestClient(t, mux)
	no := false
	s, err := c.Create(t.Context(), CreateOptions{
		Timeout: 1500 * time.Millisecond, Metadata: map[string]string{"k": "v"},
		EnvVars: map[string]string{"A": "1"}, AllowInternetAccess: &no,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"templateID": "base", "timeout": 2.0, "metadata": map[string]any{"k": "v"},
		"envVars": map[string]any{"A": "1"}, "allow_internet_access": false,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("body = %v, want %v", got, want)
	}
	if s.ID != "s1" || s.EnvdAccessToken != "tok" || s.EnvdVersion != "0.6.13" {
		t.Errorf("sandbox = %+v", s)
	}
}

func TestAPIErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		body   string
		check  func(error) bool
		msg    string
	}{
		{"not found", 404, `{"code":404,"message":"sandbox x not found"}`, IsNotFound, "sandbox x not found"},
		{"unauthorized", 401, `{"code":401,"message":"invalid API key"}`, IsUnauthorized, "invalid API key"},
		{"conflict", 409, `{"code":409,"message":"already paused"}`, IsConflict, "already paused"},
		{"plain text body", 400, "bad things", IsInvalidArgument, "bad things"},
		{"body code decides", 500, `{"code":404,"message":"gone"}`, IsNotFound, "gone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mux := http.NewServeMux()
			mux.HandleFunc("GET /sandboxes/{id}", func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			_, err := newTestClient(t, mux).Get(t.Context(), "x")
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != tt.status {
				t.Fatalf("error = %v, want *APIError with status %d", err, tt.status)
			}
			if !tt.check(err) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q: check failed or message %q missing", err, tt.msg)
			}
		})
	}
}

func TestListFollowsPagesAndEncodesFilters(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	var queries []url.Values
	mux.HandleFunc("GET /v2/sandboxes", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		queries = append(queries, q)
		if q.Get("nextToken") == "" {
			w.Header().Set("X-Next-Token", "page2")
			io.WriteString(w, `[{"sandboxID":"a","state":"running"}]`)
			return
		}
		io.WriteString(w, `[{"sandboxID":"b","state":"paused","metadata":{"user":"x y"}}]`)
	})
	c := newTestClient(t, mux)
	got, err := c.List(t.Context(), ListOptions{Metadata: map[string]string{"user": "x y", "a&b": "="}, State: []string{StateRunning, StatePaused}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].SandboxID != "a" || got[1].SandboxID != "b" || got[1].Metadata["user"] != "x y" {
		t.Fatalf("List = %+v", got)
	}
	if len(queries) != 2 || queries[1].Get("nextToken") != "page2" {
		t.Fatalf("queries = %v", queries)
	}
	// The filter is itself a query string (E2B's double encoding).
	if md := queries[0].Get("metadata"); md != "a%26b=%3D&user=x+y" {
		t.Errorf("metadata param = %q", md)
	}
	if st := queries[0].Get("state"); st != "running,paused" {
		t.Errorf("state param = %q", st)
	}
}

// fakeStart answers process.Process/Start with the given envelopes after
// checking the request is framed and routed like the E2B SDKs do it.
func fakeStart(t *testing.T, wantBody []byte, resp []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		checks := map[string]string{
			"Content-Type":             "application/connect+json",
			"Connect-Protocol-Version": "1",
			"E2b-Sandbox-Id":           "abc123",
			"E2b-Sandbox-Port":         "49983",
			"X-Access-Token":           "tok",
		}
		for k, v := range checks {
			if got := r.Header.Get(k); got != v {
				t.Errorf("header %s = %q, want %q", k, got, v)
			}
		}
		body, _ := io.ReadAll(r.Body)
		if wantBody != nil && !bytes.Equal(body, wantBody) {
			t.Errorf("request body = %q, want %q", body, wantBody)
		}
		w.Header().Set("Content-Type", "application/connect+json")
		w.Write(resp)
	}
}

func TestRunGoldenExchange(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /process.Process/Start", fakeStart(t, goldenStartRequest, goldenStartResponse))
	s := testSandbox(newTestClient(t, mux))
	var streamed strings.Builder
	res, err := s.Commands.Run(t.Context(), "echo hi", RunOptions{OnStdout: func(c string) { streamed.WriteString(c) }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stdout != "hi\n" || res.ExitCode != 0 || streamed.String() != "hi\n" {
		t.Errorf("result = %+v, streamed %q", res, streamed.String())
	}
}

func envelopes(msgs ...string) []byte {
	var b []byte
	for _, m := range msgs {
		b = append(b, encodeEnvelope(0, []byte(m))...)
	}
	return b
}

func TestRunOutcomes(t *testing.T) {
	t.Parallel()
	start := `{"event":{"start":{"pid":7}}}`
	tests := []struct {
		name   string
		resp   []byte
		health int
		check  func(t *testing.T, res *CommandResult, err error)
	}{
		{
			name: "non-zero exit",
			resp: append(envelopes(start, `{"event":{"data":{"stderr":"b29wcw=="}}}`, `{"event":{"end":{"exitCode":3,"exited":true,"status":"exit status 3"}}}`),
				encodeEnvelope(envelopeEndStream, []byte(`{}`))...),
			check: func(t *testing.T, res *CommandResult, err error) {
				var ee *CommandExitError
				if !errors.As(err, &ee) || ee.ExitCode != 3 || res == nil || res.Stderr != "oops" {
					t.Errorf("res=%+v err=%v, want exit 3 with stderr", res, err)
				}
			},
		},
		{
			name: "keepalives are skipped",
			resp: append(envelopes(start, `{"event":{"keepalive":{}}}`, `{"event":{"data":{"stdout":"b2s="}}}`, `{"event":{"end":{"exited":true}}}`),
				encodeEnvelope(envelopeEndStream, []byte(`{}`))...),
			check: func(t *testing.T, res *CommandResult, err error) {
				if err != nil || res.Stdout != "ok" {
					t.Errorf("res=%+v err=%v", res, err)
				}
			},
		},
		{
			name: "first event is not start",
			resp: envelopes(`{"event":{"keepalive":{}}}`),
			check: func(t *testing.T, res *CommandResult, err error) {
				if err == nil || !strings.Contains(err.Error(), "expected a start event") {
					t.Errorf("err = %v", err)
				}
			},
		},
		{
			name: "stream error before start",
			resp: encodeEnvelope(envelopeEndStream, []byte(`{"error":{"code":"invalid_argument","message":"bad cwd"}}`)),
			check: func(t *testing.T, res *CommandResult, err error) {
				if !IsInvalidArgument(err) || !strings.Contains(err.Error(), "bad cwd") {
					t.Errorf("err = %v", err)
				}
			},
		},
		{
			name:   "stream cut and sandbox gone",
			resp:   envelopes(start),
			health: http.StatusBadGateway,
			check: func(t *testing.T, res *CommandResult, err error) {
				if !IsSandboxNotRunning(err) {
					t.Errorf("err = %v, want IsSandboxNotRunning", err)
				}
			},
		},
		{
			name:   "stream cut but sandbox alive",
			resp:   envelopes(start),
			health: http.StatusNoContent,
			check: func(t *testing.T, res *CommandResult, err error) {
				if err == nil || IsSandboxNotRunning(err) || !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Errorf("err = %v, want unexpected EOF only", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mux := http.NewServeMux()
			mux.HandleFunc("POST /process.Process/Start", fakeStart(t, nil, tt.resp))
			mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
				if tt.health == 0 {
					t.Errorf("unexpected /health probe")
					tt.health = http.StatusNoContent
				}
				w.WriteHeader(tt.health)
			})
			s := testSandbox(newTestClient(t, mux))
			res, err := s.Commands.Run(t.Context(), "x", RunOptions{})
			tt.check(t, res, err)
		})
	}
}

func TestProxyNotFoundMeansNotRunning(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	notFound := func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, `{"sandboxId":"abc123","message":"The sandbox was not found","code":502}`)
	}
	mux.HandleFunc("/", notFound)
	s := testSandbox(newTestClient(t, mux))
	ctx := t.Context()
	if _, err := s.Commands.Run(ctx, "true", RunOptions{}); !IsSandboxNotRunning(err) {
		t.Errorf("Run: %v", err)
	}
	if _, err := s.Files.Read(ctx, "/etc/hostname"); !IsSandboxNotRunning(err) {
		t.Errorf("Read: %v", err)
	}
	if _, err := s.Files.Stat(ctx, "/"); !IsSandboxNotRunning(err) {
		t.Errorf("Stat: %v", err)
	}
	if running, err := s.IsRunning(ctx); err != nil || running {
		t.Errorf("IsRunning = %v, %v; want false", running, err)
	}
}

func TestFiles(t *testing.T) {
	t.Parallel()
	store := map[string][]byte{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /files", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Access-Token") != "tok" {
			t.Errorf("no access token on /files")
		}
		f, _, err := r.FormFile("file")
		if err != nil {
			t.Errorf("multipart: %v", err)
			w.WriteHeader(400)
			return
		}
		data, _ := io.ReadAll(f)
		path := r.URL.Query().Get("path")
		store[path] = data
		json.NewEncoder(w).Encode([]map[string]string{{"path": path, "name": "x", "type": "file"}})
	})
	mux.HandleFunc("GET /files", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("username") != "root" {
			t.Errorf("username = %q, want root", r.URL.Query().Get("username"))
		}
		data, ok := store[r.URL.Query().Get("path")]
		if !ok {
			w.WriteHeader(404)
			io.WriteString(w, `{"code":404,"message":"file not found"}`)
			return
		}
		w.Write(data)
	})
	mux.HandleFunc("POST /filesystem.Filesystem/Stat", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Basic cm9vdDo=" { // "root:"
			t.Errorf("Authorization = %q", r.Header.Get("Authorization"))
		}
		var req struct{ Path string }
		json.NewDecoder(r.Body).Decode(&req)
		if _, ok := store[req.Path]; !ok {
			w.WriteHeader(404)
			io.WriteString(w, `{"code":"not_found","message":"no such file"}`)
			return
		}
		io.WriteString(w, `{"entry":{"name":"a","type":"FILE_TYPE_FILE","path":"/a","size":"5","mode":420,"modifiedTime":"2026-01-02T03:04:05Z"}}`)
	})
	mux.HandleFunc("POST /filesystem.Filesystem/MakeDir", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(409)
		io.WriteString(w, `{"code":"already_exists","message":"exists"}`)
	})
	s := testSandbox(newTestClient(t, mux))
	f := s.Files.As("root")
	ctx := context.Background()
	if _, err := f.Write(ctx, "/a", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if got, err := f.Read(ctx, "/a"); err != nil || string(got) != "hello" {
		t.Errorf("Read = %q, %v", got, err)
	}
	if _, err := f.Read(ctx, "/missing"); !IsNotFound(err) {
		t.Errorf("Read missing: %v", err)
	}
	info, err := f.Stat(ctx, "/a")
	if err != nil || info.Type != FileTypeFile || info.Size != 5 || info.Mode != 0o644 || info.ModifiedTime.Year() != 2026 {
		t.Errorf("Stat = %+v, %v", info, err)
	}
	if ok, err := f.Exists(ctx, "/nope"); ok || err != nil {
		t.Errorf("Exists(/nope) = %v, %v", ok, err)
	}
	if created, err := f.MakeDir(ctx, "/d"); created || err != nil {
		t.Errorf("MakeDir existing = %v, %v", created, err)
	}
}

// NewEnvd talks to one envd directly: commands work with the limits of
// its config, the control plane is refused.
func TestNewEnvd(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 4096)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /process.Process/Start", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Access-Token") != "tok" {
			t.Errorf("access token %q", r.Header.Get("X-Access-Token"))
		}
		w.Header().Set("Content-Type", "application/connect+json")
		data := base64.StdEncoding.EncodeToString([]byte(big))
		w.Write(append(envelopes(`{"event":{"start":{"pid":7}}}`, `{"event":{"data":{"stdout":"`+data+`"}}}`,
			`{"event":{"data":{"stdout":"dGFpbA=="}}}`, `{"event":{"end":{"exited":true}}}`),
			encodeEnvelope(envelopeEndStream, []byte(`{}`))...))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	s, err := NewEnvd(EnvdConfig{URL: srv.URL, SandboxID: "abc123", AccessToken: "tok", MaxMessageBytes: 8 << 10})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Commands.Run(t.Context(), "x", RunOptions{OutputLimit: 6})
	if err != nil || res.Stdout != "xxtail" {
		t.Errorf("Run = %+v, %v; want the last 6 bytes", res, err)
	}
	small, err := NewEnvd(EnvdConfig{URL: srv.URL, SandboxID: "abc123", AccessToken: "tok", MaxMessageBytes: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := small.Commands.Run(t.Context(), "x", RunOptions{}); !errors.Is(err, ErrMessageTooLarge) {
		t.Errorf("a 5 KiB envelope over a 1 KiB limit: %v", err)
	}
	if err := s.Kill(t.Context()); err == nil || !strings.Contains(err.Error(), "envd only") {
		t.Errorf("Kill on an envd handle: %v", err)
	}
	if _, err := NewEnvd(EnvdConfig{URL: "unix:///x", SandboxID: "abc123"}); err == nil {
		t.Error("a non-http URL is accepted")
	}
	if _, err := NewEnvd(EnvdConfig{URL: srv.URL}); err == nil {
		t.Error("a handle without a sandbox ID is accepted")
	}
}

func TestSentinelErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want error
	}{
		{&APIError{Status: 404, Code: 404}, ErrNotFound},
		{&APIError{Status: 401, Code: 401}, ErrUnauthorized},
		{&APIError{Status: 429, Code: 429}, ErrRateLimited},
		{&APIError{Status: 504, Code: 504}, ErrTimeout},
		{&RPCError{Code: "not_found"}, ErrNotFound},
		{&RPCError{Code: "deadline_exceeded"}, ErrTimeout},
		{&RPCError{Code: "failed_precondition"}, ErrPrecondition},
		{fmt.Errorf("wrapped: %w", &RPCError{Code: "already_exists"}), ErrConflict},
		{&BuildError{Message: "step failed"}, ErrInvalidArgument},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("errors.Is(%v, %v) = false", tc.err, tc.want)
		}
	}
	if errors.Is(&APIError{Status: 404, Code: 404}, ErrUnauthorized) {
		t.Error("a 404 matches ErrUnauthorized")
	}
}
