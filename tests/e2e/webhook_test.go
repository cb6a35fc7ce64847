package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/sdk"
	"github.com/sbxdev/sbx/sdk/webhook"
)

// signedReceiver is a webhook endpoint that checks both signature schemes of
// every delivery and records the events it accepted.
type signedReceiver struct {
	t      *testing.T
	secret string
	srv    *httptest.Server
	down   atomic.Bool // answer 503 while set

	mu     sync.Mutex
	events []map[string]any
	bad    []string
}

func newSignedReceiver(t *testing.T, secret string) *signedReceiver {
	r := &signedReceiver{t: t, secret: secret}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *signedReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	if r.down.Load() {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := webhook.VerifyE2B(r.secret, body, req.Header.Get("e2b-signature")); err != nil {
		r.bad = append(r.bad, "e2b: "+err.Error())
	}
	if err := webhook.VerifyStandard(r.secret, req.Header, body, 5*time.Minute); err != nil {
		r.bad = append(r.bad, "standard: "+err.Error())
	}
	var ev map[string]any
	if err := json.Unmarshal(body, &ev); err != nil {
		r.bad = append(r.bad, "body: "+err.Error())
	}
	r.events = append(r.events, ev)
	w.WriteHeader(http.StatusNoContent)
}

// waitFor polls until the signedReceiver holds an event of each type for sandboxID.
func (r *signedReceiver) waitFor(t *testing.T, sandboxID string, types ...string) map[string]map[string]any {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		r.mu.Lock()
		got := map[string]map[string]any{}
		for _, ev := range r.events {
			if ev["sandboxId"] == sandboxID {
				got[fmt.Sprint(ev["type"])] = ev
			}
		}
		bad := append([]string(nil), r.bad...)
		r.mu.Unlock()
		if len(bad) > 0 {
			t.Fatalf("deliveries with invalid signatures or bodies: %v", bad)
		}
		complete := true
		for _, ty := range types {
			if got[ty] == nil {
				complete = false
			}
		}
		if complete {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("signedReceiver got %d events for %s, want types %v", len(got), sandboxID, types)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func registerLifecycleWebhook(t *testing.T, srv *Server, url, secret string) string {
	t.Helper()
	body := fmt.Sprintf(`{"name":"e2e","url":%q,"events":["sandbox.lifecycle.created","sandbox.lifecycle.killed"],"signatureSecret":%q}`, url, secret)
	resp := srv.Raw(t, "POST", "/events/webhooks", body, map[string]string{"X-API-Key": srv.APIKey})
	if resp.Status != http.StatusCreated {
		t.Fatalf("POST /events/webhooks: %d %s", resp.Status, resp.Body)
	}
	var wh struct{ ID string }
	if err := json.Unmarshal([]byte(resp.Body), &wh); err != nil || wh.ID == "" {
		t.Fatalf("webhook creation answer %s: %v", resp.Body, err)
	}
	return wh.ID
}

// A webhook gets created then killed, both signed, with the kill reason,
// and the seed's fields (sandboxId, type, eventData).
func TestWebhookLifecycle(t *testing.T) {
	srv := StartServer(t, "--webhook-allow-private")
	const secret = "e2e-secret-1"
	rcv := newSignedReceiver(t, secret)
	registerLifecycleWebhook(t, srv, rcv.srv.URL, secret)

	c := srv.Client(t)
	s := create(t, c, sdk.CreateOptions{Metadata: map[string]string{"purpose": "webhook-e2e"}})
	if err := s.Kill(opCtx(t)); err != nil {
		t.Fatal(err)
	}
	got := rcv.waitFor(t, s.ID, "sandbox.lifecycle.created", "sandbox.lifecycle.killed")
	created, killed := got["sandbox.lifecycle.created"], got["sandbox.lifecycle.killed"]
	if created["sandboxTeamId"] == "" || created["sandboxTemplateId"] != "base" {
		t.Errorf("created event lacks team/template: %v", created)
	}
	meta, _ := created["eventData"].(map[string]any)["sandbox_metadata"].(map[string]any)
	if meta["purpose"] != "webhook-e2e" {
		t.Errorf("created eventData.sandbox_metadata = %v, want purpose=webhook-e2e", meta)
	}
	data, _ := killed["eventData"].(map[string]any)
	if data["kill_reason"] != "request" {
		t.Errorf("killed eventData.kill_reason = %v, want request", data["kill_reason"])
	}
	ct, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(created["timestamp"]))
	kt, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(killed["timestamp"]))
	if !ct.Before(kt) {
		t.Errorf("created at %v is not before killed at %v", ct, kt)
	}
}

// With the signedReceiver down and the server killed with SIGKILL while
// deliveries wait for their retry, a restarted server still delivers every
// event, and the deliveries log shows the failed attempts.
func TestWebhookSurvivesServerCrash(t *testing.T) {
	srv := StartServer(t, "--webhook-allow-private")
	const secret = "whsec_" + "c2J4LWUyZS1zZWNyZXQtMg=="
	rcv := newSignedReceiver(t, secret)
	rcv.down.Store(true)
	id := registerLifecycleWebhook(t, srv, rcv.srv.URL, secret)

	c := srv.Client(t)
	s := create(t, c, sdk.CreateOptions{})
	if err := s.Kill(opCtx(t)); err != nil {
		t.Fatal(err)
	}
	// Wait until the first attempt failed, so the retry is pending.
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp := srv.Raw(t, "GET", "/events/webhooks/"+id+"/deliveries", "", map[string]string{"X-API-Key": srv.APIKey})
		if resp.Status == 200 && countAttempts(t, resp.Body) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failed attempts logged: %s", resp.Body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	srv.Stop(syscall.SIGKILL)
	rcv.down.Store(false)
	srv.Start(t)

	rcv.waitFor(t, s.ID, "sandbox.lifecycle.created", "sandbox.lifecycle.killed")
	resp := srv.Raw(t, "GET", "/events/webhooks/"+id+"/deliveries", "", map[string]string{"X-API-Key": srv.APIKey})
	if n := countAttempts(t, resp.Body); n < 4 {
		t.Fatalf("deliveries log shows %d attempts, want ≥ 4 (2 failed + 2 delivered): %s", n, resp.Body)
	}
}

func countAttempts(t *testing.T, body string) int {
	t.Helper()
	var page struct {
		Data []struct {
			Attempts []json.RawMessage `json:"attempts"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &page); err != nil {
		t.Fatalf("deliveries page %s: %v", body, err)
	}
	n := 0
	for _, d := range page.Data {
		n += len(d.Attempts)
	}
	return n
}
