package main

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/events/eventstest"
	"github.com/sbxdev/sbx/internal/webhook"
)

// logKiller plays the API: killing a sandbox appends its killed event,
// which is delivered back to the receiver like any other.
type logKiller struct {
	log    *events.Log
	team   string
	mu     sync.Mutex
	killed []string
}

func (k *logKiller) Kill(ctx context.Context, id string) error {
	k.mu.Lock()
	k.killed = append(k.killed, id)
	k.mu.Unlock()
	return k.log.Append(ctx, &events.Event{Type: events.SandboxKilled, TeamID: k.team, SandboxID: id, EventData: map[string]any{"kill_reason": "runaway"}})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestReceiverWithRealDeliveries feeds the receiver real, signed deliveries
// from sbx's webhook engine.
func TestReceiverWithRealDeliveries(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	db, _ := eventstest.TempDB(t)
	evlog := events.NewLog(db, logger)
	eng, err := webhook.NewEngine(db, evlog, webhook.Config{AllowPrivate: true, Workers: 4}, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = eng.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	const secret = "whsec_c2VjcmV0LWJ5dGVzLWZvci10aGUtZXhhbXBsZQ=="
	rc := NewReceiver(secret, 2, 2*time.Second, logger)
	killer := &logKiller{log: evlog, team: "team-a"}
	rc.Killer = killer
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	types := []string{events.SandboxCreated, events.SandboxKilled}
	var hookA string
	for _, team := range []string{"team-a", "team-b"} {
		h, err := eng.Create(ctx, team, webhook.Input{Name: ptr("receiver"), URL: ptr(srv.URL), Events: &types, SignatureSecret: ptr(secret)})
		if err != nil {
			t.Fatal(err)
		}
		if team == "team-a" {
			hookA = h.ID
		}
	}
	add := func(typ, team, sb string, data map[string]any) {
		if err := evlog.Append(ctx, &events.Event{Type: typ, TeamID: team, SandboxID: sb, EventData: data}); err != nil {
			t.Fatal(err)
		}
	}
	add(events.SandboxCreated, "team-a", "sb1", nil)
	add(events.SandboxKilled, "team-a", "sb1", map[string]any{"kill_reason": "request"})
	add(events.SandboxCreated, "team-a", "sb2", nil)
	add(events.SandboxCreated, "team-a", "sb3", nil) // third today: over the limit of 2
	add(events.SandboxCreated, "team-b", "other", nil)
	add(events.SandboxKilled, "team-b", "other", map[string]any{"kill_reason": "timeout"})

	day := time.Now().UTC().Format(time.DateOnly)
	waitFor(t, "creates counted", func() bool {
		s := rc.Snapshot()
		return s.CreatesPerTeamPerDay["team-a"][day] == 3 && s.CreatesPerTeamPerDay["team-b"][day] == 1
	})
	s := rc.Snapshot()
	if len(s.Alerts) != 1 || !strings.Contains(s.Alerts[0], "team team-a") || !strings.Contains(s.Alerts[0], "3/2") {
		t.Fatalf("alerts: %v", s.Alerts)
	}
	// A redelivered create (at-least-once) is not counted twice.
	page, err := eng.Deliveries(ctx, "team-a", hookA, webhook.DeliveryQuery{OrderAsc: true, Limit: 1})
	if err != nil || len(page.Data) != 1 || page.Data[0].EventType != events.SandboxCreated {
		t.Fatalf("deliveries: %+v %v", page, err)
	}
	if _, err := eng.Redeliver(ctx, "team-a", hookA, page.Data[0].DeliveryID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "redelivery", func() bool {
		p, err := eng.Deliveries(ctx, "team-a", hookA, webhook.DeliveryQuery{OrderAsc: true, Limit: 1})
		return err == nil && len(p.Data[0].Attempts) == 2 && p.Data[0].Attempts[1].Status == "success"
	})
	if n := rc.Snapshot().CreatesPerTeamPerDay["team-a"][day]; n != 3 {
		t.Fatalf("creates after a redelivery: %d, want 3", n)
	}

	// sb2 and sb3 outlive the runaway deadline; sb1 and team-b's were killed in time.
	waitFor(t, "runaways killed", func() bool {
		s := rc.Snapshot()
		return len(s.Runaways) == 2 && s.KillReasons["sb2"] == "runaway" && s.KillReasons["sb3"] == "runaway"
	})
	s = rc.Snapshot()
	slices.Sort(s.Runaways)
	if !slices.Equal(s.Runaways, []string{"sb2", "sb3"}) || s.KillReasons["sb1"] != "request" || s.KillReasons["other"] != "timeout" || len(s.Running) != 0 {
		t.Fatalf("snapshot: %+v", s)
	}

	// A forged delivery is refused.
	resp, err := http.Post(srv.URL, "application/json", strings.NewReader(`{"type":"sandbox.lifecycle.created","sandboxTeamId":"team-a"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged delivery: %d", resp.StatusCode)
	}
}

func ptr[T any](v T) *T { return &v }

// sbx delivers a sandbox's events in order, but a redelivery asked for by
// hand can bring its creation after its kill; the receiver must not then
// report it a runaway (it did, and killed it again, while the server
// delivered a sandbox's events concurrently).
func TestReceiverKillBeforeCreate(t *testing.T) {
	rc := NewReceiver("whsec_c2VjcmV0LWJ5dGVzLWZvci10aGUtZXhhbXBsZQ==", 0, 20*time.Millisecond, slog.New(slog.DiscardHandler))
	rc.handle("msg-2", &Event{Type: "sandbox.lifecycle.killed", SandboxID: "sb", SandboxTeamID: "t",
		EventData: map[string]any{"kill_reason": "request"}})
	rc.handle("msg-1", &Event{Type: "sandbox.lifecycle.created", SandboxID: "sb", SandboxTeamID: "t", Timestamp: time.Now()})
	time.Sleep(100 * time.Millisecond) // five times RunawayAfter: a timer would have fired
	if s := rc.Snapshot(); len(s.Runaways) != 0 || len(s.Running) != 0 {
		t.Fatalf("a sandbox killed before its creation arrived: runaways %v, running %v; want none", s.Runaways, s.Running)
	}
}
