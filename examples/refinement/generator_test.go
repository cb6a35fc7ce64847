package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/sdk/webhook"
)

func TestMonitor(t *testing.T) {
	t.Parallel()
	m := NewMonitor(io.Discard)
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	post := func(path, body, secret string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
		req.Header.Set(webhook.HeaderE2BSignature, webhook.SignE2B(secret, []byte(body)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	ev := func(typ, id, corr string) string {
		return `{"type":"` + typ + `","sandboxId":"` + id + `","eventData":{"sandbox_metadata":{"refinement_id":"` + corr + `","refinement_attempt":"1"}}}`
	}
	tests := []struct {
		name   string
		path   string
		body   string
		secret string
		status int
	}{
		{"created", "/generation/req-1", ev("sandbox.lifecycle.created", "sb1", "req-1"), m.Secret, 204},
		{"killed", "/generation/req-1", ev("sandbox.lifecycle.killed", "sb1", "req-1"), m.Secret, 204},
		{"bad signature", "/generation/req-1", ev("sandbox.lifecycle.created", "sb2", "req-1"), "wrong", 401},
		{"other generation", "/generation/req-1", ev("sandbox.lifecycle.created", "sb3", "req-2"), m.Secret, 204},
		{"untagged", "/generation/req-1", `{"type":"sandbox.lifecycle.created","sandboxId":"sb4","eventData":{}}`, m.Secret, 204},
	}
	for _, tt := range tests {
		if got := post(tt.path, tt.body, tt.secret); got != tt.status {
			t.Errorf("%s: status %d, want %d", tt.name, got, tt.status)
		}
	}
	if c, k := m.Counts("req-1"); c != 1 || k != 1 {
		t.Errorf("req-1 counts created %d killed %d, want 1 1", c, k)
	}
	if c, _ := m.Counts("req-2"); c != 0 {
		t.Errorf("an event sent to req-1's URL for req-2 was counted")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if c, k := m.WaitFor(ctx, "req-1", 2); c != 1 || k != 1 {
		t.Errorf("WaitFor returned %d %d after its context ended, want the current 1 1", c, k)
	}
}
