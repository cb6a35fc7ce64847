package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/sbxdev/sbx/sdk/webhook"
)

// Event is the delivered JSON body (the fields the seed's receiver reads).
type Event struct {
	ID                string         `json:"id"`
	Type              string         `json:"type"`
	SandboxID         string         `json:"sandboxId"`
	SandboxTemplateID string         `json:"sandboxTemplateId"`
	SandboxTeamID     string         `json:"sandboxTeamId"`
	EventData         map[string]any `json:"eventData"`
	Timestamp         time.Time      `json:"timestamp"`
}

// Killer stops a sandbox; the program's implementation calls DELETE /sandboxes/{id}.
type Killer interface {
	Kill(ctx context.Context, sandboxID string) error
}

// Receiver implements the seed's two use cases: cost tracking (creates per
// team per day, alert over a daily limit) and runaway detection (a sandbox
// still alive RunawayAfter its creation is reported and, with a Killer,
// killed).
type Receiver struct {
	Secret       string
	DailyLimit   int
	RunawayAfter time.Duration
	Killer       Killer // optional
	Log          *slog.Logger

	mu       sync.Mutex
	seen     map[string]bool           // webhook-id values: deliveries are at-least-once
	creates  map[string]map[string]int // team -> UTC day -> creates
	timers   map[string]*time.Timer    // sandbox -> runaway timer
	alerts   []string                  // budget alerts
	runaways []string                  // sandboxes reported as runaway
	kills    map[string]string         // sandbox -> kill_reason seen
}

// NewReceiver returns a receiver verifying with secret.
func NewReceiver(secret string, dailyLimit int, runawayAfter time.Duration, log *slog.Logger) *Receiver {
	return &Receiver{
		Secret: secret, DailyLimit: dailyLimit, RunawayAfter: runawayAfter, Log: log,
		seen: map[string]bool{}, creates: map[string]map[string]int{}, timers: map[string]*time.Timer{},
		kills: map[string]string{},
	}
}

// ServeHTTP handles one delivery.
func (rc *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST deliveries here", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	// Verify over the raw bytes before parsing. Standard Webhooks carries a
	// timestamp (replay protection); E2B's signature is checked too, as a
	// receiver written for E2B's cloud would.
	if err := webhook.VerifyE2B(rc.Secret, body, r.Header.Get(webhook.HeaderE2BSignature)); err != nil {
		http.Error(w, "invalid e2b-signature", http.StatusUnauthorized)
		return
	}
	if err := webhook.VerifyStandard(rc.Secret, r.Header, body, 5*time.Minute); err != nil {
		http.Error(w, "invalid webhook-signature: "+err.Error(), http.StatusUnauthorized)
		return
	}
	var ev Event
	if err := json.Unmarshal(body, &ev); err != nil {
		http.Error(w, "body is not an event", http.StatusBadRequest)
		return
	}
	rc.handle(r.Header.Get(webhook.HeaderID), &ev)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"status":"ok"}`))
}

func (rc *Receiver) handle(msgID string, ev *Event) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.seen[msgID] {
		return // a retry of something already processed
	}
	rc.seen[msgID] = true
	switch ev.Type {
	case "sandbox.lifecycle.created":
		day := ev.Timestamp.UTC().Format(time.DateOnly)
		if rc.creates[ev.SandboxTeamID] == nil {
			rc.creates[ev.SandboxTeamID] = map[string]int{}
		}
		rc.creates[ev.SandboxTeamID][day]++
		if n := rc.creates[ev.SandboxTeamID][day]; rc.DailyLimit > 0 && n > rc.DailyLimit {
			msg := fmt.Sprintf("team %s: daily sandbox limit exceeded on %s: %d/%d", ev.SandboxTeamID, day, n, rc.DailyLimit)
			rc.alerts = append(rc.alerts, msg)
			rc.Log.Warn(msg)
		}
		// sbx delivers a sandbox's events in order (its killed waits
		// until its created is delivered or has failed for good), but a
		// redelivery asked for by hand can bring a created after the
		// killed: a sandbox whose kill came first is not watched, or it
		// would be reported a runaway after its death.
		if _, dead := rc.kills[ev.SandboxID]; rc.RunawayAfter > 0 && !dead {
			id := ev.SandboxID
			rc.timers[id] = time.AfterFunc(rc.RunawayAfter, func() { rc.runaway(id) })
		}
	case "sandbox.lifecycle.killed":
		if t := rc.timers[ev.SandboxID]; t != nil {
			t.Stop()
			delete(rc.timers, ev.SandboxID)
		}
		reason, _ := ev.EventData["kill_reason"].(string)
		rc.kills[ev.SandboxID] = reason
	}
}

func (rc *Receiver) runaway(sandboxID string) {
	rc.mu.Lock()
	if _, alive := rc.timers[sandboxID]; !alive {
		rc.mu.Unlock()
		return
	}
	delete(rc.timers, sandboxID)
	rc.runaways = append(rc.runaways, sandboxID)
	rc.mu.Unlock()
	rc.Log.Warn("runaway sandbox", "sandbox.id", sandboxID, "after", rc.RunawayAfter)
	if rc.Killer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := rc.Killer.Kill(ctx, sandboxID); err != nil {
			rc.Log.Error("kill runaway sandbox failed", "sandbox.id", sandboxID, "err", err)
		}
	}
}

// Snapshot is the receiver's state, served at GET /stats.
type Snapshot struct {
	CreatesPerTeamPerDay map[string]map[string]int `json:"createsPerTeamPerDay"`
	Alerts               []string                  `json:"alerts"`
	Runaways             []string                  `json:"runaways"`
	Running              []string                  `json:"running"`
	KillReasons          map[string]string         `json:"killReasons"`
}

// Snapshot copies the current state.
func (rc *Receiver) Snapshot() Snapshot {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	s := Snapshot{CreatesPerTeamPerDay: map[string]map[string]int{}, KillReasons: map[string]string{},
		Alerts: append([]string{}, rc.alerts...), Runaways: append([]string{}, rc.runaways...), Running: []string{}}
	for team, days := range rc.creates {
		s.CreatesPerTeamPerDay[team] = map[string]int{}
		for d, n := range days {
			s.CreatesPerTeamPerDay[team][d] = n
		}
	}
	for id := range rc.timers {
		s.Running = append(s.Running, id)
	}
	for id, r := range rc.kills {
		s.KillReasons[id] = r
	}
	return s
}
