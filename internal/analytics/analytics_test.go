package analytics

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/events/eventstest"
	"github.com/sbxdev/sbx/internal/usage"
)

// script writes a sequence of lifecycle events with an injected clock into
// a real SQLite events table, then checks every number of the summary and
// the time series against values worked out by hand.
func TestScriptedSequence(t *testing.T) {
	db, _ := eventstest.TempDB(t)
	t0 := time.Date(2026, 4, 1, 10, 0, 0, 0, time.UTC)
	now := t0
	clock := func() time.Time { return now }
	log := events.NewLog(db, slog.New(slog.DiscardHandler))
	log.SetClock(clock)
	exec := func(vcpu, mem int) map[string]any {
		return map[string]any{"execution": map[string]any{"vcpu_count": vcpu, "memory_mb": mem}}
	}
	kill := func(reason string) map[string]any {
		d := exec(2, 1024)
		d["kill_reason"] = reason
		return d
	}
	steps := []struct {
		at      time.Duration
		typ, id string
		tpl     string
		data    map[string]any
	}{
		{0, events.SandboxCreated, "a", "base", nil},
		{1 * time.Minute, events.SandboxCreated, "b", "base", nil},
		{2 * time.Minute, events.SandboxCreated, "c", "code-interpreter", nil},
		{3 * time.Minute, events.SandboxKilled, "a", "base", kill("request")},             // a: 3 min
		{4 * time.Minute, events.SandboxPaused, "b", "base", exec(2, 1024)},               // b ran 3 min
		{6 * time.Minute, events.SandboxResumed, "b", "base", nil},                        // paused 2 min
		{7 * time.Minute, events.SandboxKilled, "c", "code-interpreter", kill("timeout")}, // c: 5 min
		{7 * time.Minute, events.SandboxCreated, "d", "base", nil},
		{9 * time.Minute, events.SandboxKilled, "b", "base", kill("runaway")}, // b: 8 min alive, 6 running
		{9 * time.Minute, events.SandboxCreated, "e", "base", nil},            // d, e still running
	}
	for _, s := range steps {
		now = t0.Add(s.at)
		if err := log.Append(t.Context(), &events.Event{Type: s.typ, TeamID: "t1", SandboxID: s.id, SandboxTemplateID: s.tpl, EventData: s.data}); err != nil {
			t.Fatal(err)
		}
	}
	// Another team's activity must not show.
	if err := log.Append(t.Context(), &events.Event{Type: events.SandboxCreated, TeamID: "t2", SandboxID: "x", SandboxTemplateID: "base"}); err != nil {
		t.Fatal(err)
	}
	now = t0.Add(10 * time.Minute)
	rates := usage.Rates{VCPUSecond: 0.001, GiBSecond: 0.0005}
	u := usage.NewService(log, rates, nil)
	u.SetClock(clock)
	u.DefaultVCPU, u.DefaultMemoryMB = 1, 512 // d and e: sizes unknown from events
	svc := New(u)

	sum, err := svc.Summarize(t.Context(), "t1", t0, now)
	if err != nil {
		t.Fatal(err)
	}
	// Running seconds: a 180, b 180+180=360, c 300, d 180, e 60.
	// vCPU-s: (180+360+300)*2 + (180+60)*1 = 1680+240 = 1920.
	// GiB-s: (180+360+300)*1 + 240*0.5 = 960.
	wantCost := 1920*0.001 + 960*0.0005
	if sum.Created != 5 || sum.Killed != 3 || sum.Running != 2 {
		t.Errorf("created/killed/running = %d/%d/%d, want 5/3/2", sum.Created, sum.Killed, sum.Running)
	}
	if sum.KillReasons["request"] != 1 || sum.KillReasons["timeout"] != 1 || sum.KillReasons["runaway"] != 1 {
		t.Errorf("kill reasons = %v", sum.KillReasons)
	}
	// Lifetimes 180, 300, 480: mean 320, p95 (nearest rank 3 of 3) 480.
	if sum.AvgLifetimeSeconds != 320 || sum.P95LifetimeSeconds != 480 {
		t.Errorf("lifetime avg %v p95 %v, want 320 and 480", sum.AvgLifetimeSeconds, sum.P95LifetimeSeconds)
	}
	// At 2m: a, b, c alive = 3; at 7m c dies as d starts (no overlap): b, d; at 9m b dies as e starts.
	if sum.PeakConcurrency != 3 {
		t.Errorf("peak concurrency %d, want 3", sum.PeakConcurrency)
	}
	if sum.Cost.VCPUSeconds != 1920 || sum.Cost.GiBSeconds != 960 || !close(sum.Cost.USD, wantCost) {
		t.Errorf("cost = %+v, want 1920 vCPU-s, 960 GiB-s, $%v", sum.Cost, wantCost)
	}
	if len(sum.ByTemplate) != 2 || sum.ByTemplate[0].Template != "base" || sum.ByTemplate[0].Created != 4 ||
		sum.ByTemplate[0].Killed != 2 || sum.ByTemplate[1].Cost.VCPUSeconds != 600 {
		t.Errorf("by template = %+v", sum.ByTemplate)
	}

	pts, err := svc.Timeseries(t.Context(), "t1", t0, now, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// [0,5): created a b c, killed a, peak 3. [5,10): created d e, killed c b, peak 2 (b c at 5m... c dies at 7, d starts).
	want := []Point{{Time: t0, Created: 3, Killed: 1, PeakConcurrency: 3}, {Time: t0.Add(5 * time.Minute), Created: 2, Killed: 2, PeakConcurrency: 2}}
	if len(pts) != 2 {
		t.Fatalf("points = %+v", pts)
	}
	var costSum float64
	for i := range pts {
		costSum += pts[i].CostUSD
		pts[i].CostUSD = 0
		if pts[i] != want[i] {
			t.Errorf("point %d = %+v, want %+v", i, pts[i], want[i])
		}
	}
	if !close(costSum, wantCost) {
		t.Errorf("series cost %v, want %v", costSum, wantCost)
	}

	// Over HTTP, with a window that cuts a's life in half.
	mux := http.NewServeMux()
	NewHandler(svc, slog.New(slog.DiscardHandler)).Register(mux)
	srv := httptest.NewServer(eventstest.AsTeam(mux))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/analytics/summary?from="+t0.Add(90*time.Second).Format(time.RFC3339)+"&to="+t0.Add(8*time.Minute).Format(time.RFC3339), nil)
	req.Header.Set(eventstest.TeamHeader, "t1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got Summary
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	// Created in [1.5m, 8m): c, d. Killed: a (3m), c (7m). Peak: a b c.
	if got.Created != 2 || got.Killed != 2 || got.PeakConcurrency != 3 || got.Running != 2 {
		t.Errorf("windowed summary = %+v", got)
	}
	for _, bad := range []string{"?from=yesterday", "?from=2026-04-01T10:00:00Z&to=2026-04-01T09:00:00Z"} {
		req, _ := http.NewRequest("GET", srv.URL+"/analytics/summary"+bad, nil)
		req.Header.Set(eventstest.TeamHeader, "t1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("%s: status %d, want 400", bad, resp.StatusCode)
		}
	}
}

func close(a, b float64) bool { d := a - b; return d < 1e-9 && d > -1e-9 }
