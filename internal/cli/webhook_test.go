package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/events/eventstest"
	"github.com/sbxdev/sbx/internal/webhook"
	"github.com/sbxdev/sbx/sdk"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// webhookServer serves the real events and webhook APIs over a real
// SQLite file, with API key "key-a" meaning team "team-a".
func webhookServer(t *testing.T) (url string, evlog *events.Log) {
	t.Helper()
	db, _ := eventstest.TempDB(t)
	logger := slog.New(slog.DiscardHandler)
	evlog = events.NewLog(db, logger)
	eng, err := webhook.NewEngine(db, evlog, webhook.Config{AllowPrivate: true, Workers: 2}, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = eng.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	mux := http.NewServeMux()
	events.NewHandler(evlog, logger).Register(mux)
	webhook.NewHandler(eng, logger).Register(mux)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-API-Key") == "key-a" {
			r = r.WithContext(auth.WithTeam(r.Context(), auth.Team{ID: "team-a"}))
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, evlog
}

func sbx(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	root := NewRoot()
	var out syncBuf
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

func waitOutput(t *testing.T, buf *syncBuf, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(buf.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output never contained %q:\n%s", want, buf.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWebhookCLI(t *testing.T) {
	api, evlog := webhookServer(t)
	var heard syncBuf
	listener := httptest.NewServer(listenHandler(&heard, "s3cret", false))
	t.Cleanup(listener.Close)
	flags := []string{"--api-url", api, "--api-key", "key-a"}
	ctx := t.Context()

	out, err := sbx(t, ctx, append([]string{"webhook", "create", "--name", "local", "--url", listener.URL, "--secret", "s3cret", "--json"}, flags...)...)
	if err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	var d sdk.Webhook
	if err := json.Unmarshal([]byte(out), &d); err != nil || d.ID == "" {
		t.Fatalf("create --json: %v %s", err, out)
	}
	if out, err := sbx(t, ctx, append([]string{"webhook", "test", d.ID}, flags...)...); err != nil || !strings.Contains(out, "attempt 1 success") {
		t.Fatalf("test: %v %s", err, out)
	}
	waitOutput(t, &heard, "webhook.test")

	if err := evlog.Append(ctx, &events.Event{Type: events.SandboxKilled, TeamID: "team-a", SandboxID: "sb1", EventData: map[string]any{"kill_reason": "request"}}); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, &heard, "sandbox.lifecycle.killed")
	if !strings.Contains(heard.String(), "sandbox=sb1 team=team-a e2b-signature=ok webhook-signature=ok") || !strings.Contains(heard.String(), `"kill_reason":"request"`) {
		t.Fatalf("listener output:\n%s", heard.String())
	}

	out, err = sbx(t, ctx, append([]string{"webhook", "list", "--json"}, flags...)...)
	if err != nil || !strings.Contains(out, d.ID) || strings.Contains(out, "s3cret") {
		t.Fatalf("list: %v %s", err, out)
	}
	var deliveries string
	for i := 0; i < 200 && !strings.Contains(deliveries, "sandbox.lifecycle.killed"); i++ {
		deliveries, err = sbx(t, ctx, append([]string{"webhook", "deliveries", d.ID}, flags...)...)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(deliveries, "success") || !strings.Contains(deliveries, "HTTP 204") {
		t.Fatalf("deliveries:\n%s", deliveries)
	}
	// By name, as by ID.
	if byName, err := sbx(t, ctx, append([]string{"webhook", "deliveries", "local"}, flags...)...); err != nil || byName != deliveries {
		t.Errorf("deliveries by name = %v\n%s\nwant the same as by ID:\n%s", err, byName, deliveries)
	}
	if out, err := sbx(t, ctx, append([]string{"webhook", "update", d.ID, "--disable"}, flags...)...); err != nil || !strings.Contains(out, "false") {
		t.Fatalf("update: %v %s", err, out)
	}
	if out, err := sbx(t, ctx, append([]string{"events", "list", "--sandbox", "sb1"}, flags...)...); err != nil || !strings.Contains(out, "sandbox.lifecycle.killed") {
		t.Fatalf("events list: %v %s", err, out)
	}

	// events tail replays from --since and follows.
	tailCtx, stop := context.WithCancel(ctx)
	var tailOut syncBuf
	tailDone := make(chan error, 1)
	go func() {
		root := NewRoot()
		root.SetOut(&tailOut)
		root.SetErr(&tailOut)
		root.SetArgs(append([]string{"events", "tail", "--since", "0", "--json"}, flags...))
		tailDone <- root.ExecuteContext(tailCtx)
	}()
	waitOutput(t, &tailOut, `"sandboxId":"sb1"`)
	_ = evlog.Append(ctx, &events.Event{Type: events.SandboxCreated, TeamID: "team-a", SandboxID: "live"})
	waitOutput(t, &tailOut, `"sandboxId":"live"`)
	stop()
	if err := <-tailDone; err != nil {
		t.Fatalf("tail: %v", err)
	}

	// Bad input gets the server's clear message.
	if out, err := sbx(t, ctx, append([]string{"webhook", "create", "--name", "x", "--url", "not-a-url"}, flags...)...); err == nil || !strings.Contains(err.Error(), "is not valid") {
		t.Fatalf("bad url: %v %s", err, out)
	}
	if out, err := sbx(t, ctx, append([]string{"webhook", "delete", d.ID}, flags...)...); err != nil || !strings.Contains(out, "Deleted") {
		t.Fatalf("delete: %v %s", err, out)
	}
}

func TestListenRejectsBadSignature(t *testing.T) {
	t.Parallel()
	var heard syncBuf
	srv := httptest.NewServer(listenHandler(&heard, "right", false))
	t.Cleanup(srv.Close)
	req, _ := http.NewRequestWithContext(t.Context(), "POST", srv.URL, strings.NewReader(`{"type":"sandbox.lifecycle.created"}`))
	req.Header.Set("e2b-signature", "forged")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(heard.String(), "e2b-signature=BAD") {
		t.Fatalf("status %d, output %s", resp.StatusCode, heard.String())
	}
}
