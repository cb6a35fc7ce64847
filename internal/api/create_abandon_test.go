package api

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/store"
)

// lateSandboxes finishes a create after its caller left (the manager was
// past the point where a cancel stops it) and records kills with reasons.
type lateSandboxes struct {
	fakeSandboxes
	started chan struct{}
	reasons chan string
}

func (l *lateSandboxes) Create(ctx context.Context, req sandbox.CreateRequest) (store.Sandbox, error) {
	close(l.started)
	<-ctx.Done()
	return store.Sandbox{ID: "late", TeamID: req.TeamID, State: store.StateRunning}, nil
}

func (l *lateSandboxes) KillWithReason(_ context.Context, id, reason string) error {
	l.reasons <- id + "/" + reason
	return nil
}

// TestCreateAbandoned: a create whose caller (a client, or the api
// replica that forwarded it) went away before the answer kills the
// sandbox it made, so nobody's sandbox runs until its timeout unseen.
func TestCreateAbandoned(t *testing.T) {
	e := newAccountsEnv(t)
	late := &lateSandboxes{started: make(chan struct{}), reasons: make(chan string, 1)}
	e.api.sandboxes = late
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/sandboxes", strings.NewReader(`{"templateID":"base"}`))
	req.Header.Set("X-API-Key", e.keyA)
	req.Header.Set("Content-Type", "application/json")
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	<-late.started
	cancel() // the caller leaves: its connection closes
	<-done
	select {
	case got := <-late.reasons:
		if got != "late/"+reasonAbandoned {
			t.Errorf("kill = %q; want late/%s", got, reasonAbandoned)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the sandbox made for a caller that left was not killed")
	}
}
