package usage

import (
	"math"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/events"
)

func ev(typ, id string, at time.Time, data map[string]any) events.Event {
	return events.Event{Type: typ, SandboxID: id, TeamID: "t1", SandboxTemplateID: "base", Timestamp: at, EventData: data}
}

func exec(vcpu, mem int) map[string]any {
	return map[string]any{"execution": map[string]any{"vcpu_count": float64(vcpu), "memory_mb": float64(mem)}}
}

func TestPausedTimeIsNotBilled(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 23, 0, 0, 0, time.UTC)
	sbs := Build([]events.Event{
		ev(events.SandboxCreated, "a", t0, map[string]any{"sandbox_metadata": map[string]any{"refinement_id": "r1"}}),
		ev(events.SandboxPaused, "a", t0.Add(30*time.Minute), exec(2, 1024)),
		ev(events.SandboxResumed, "a", t0.Add(50*time.Minute), nil),
		ev(events.SandboxKilled, "a", t0.Add(90*time.Minute), map[string]any{"kill_reason": "request"}),
		ev(events.SandboxCreated, "b", t0.Add(10*time.Minute), nil), // still running, size unknown
	})
	if len(sbs) != 2 {
		t.Fatalf("got %d sandboxes, want 2", len(sbs))
	}
	a := sbs[0]
	now := t0.Add(2 * time.Hour)
	if got := a.RunningSeconds(time.Time{}, now, now); got != 70*60 {
		t.Fatalf("running seconds = %v, want %v (30m + 40m, the 20m pause excluded)", got, 70*60)
	}
	if a.Refinement != "r1" || a.KillReason != "request" || a.Alive() {
		t.Fatalf("sandbox a = %+v", a)
	}
	r := Rates{VCPUSecond: 0.01, GiBSecond: 0.001}
	c := r.Price(a, time.Time{}, now, now)
	want := 4200*2*0.01 + 4200*1*0.001
	if math.Abs(c.USD-want) > 1e-9 || c.VCPUSeconds != 8400 || c.GiBSeconds != 4200 {
		t.Fatalf("cost = %+v, want USD %v", c, want)
	}
	if got := sbs[1].RunningSeconds(time.Time{}, now, now); got != 110*60 {
		t.Fatalf("open interval runs until now: got %v", got)
	}

	tests := []struct {
		groupBy string
		want    map[string]float64 // key -> running seconds
	}{
		// a: 23:00–23:30 and 23:50–00:30; b: 23:10 until now (01:00).
		{ByDay, map[string]float64{"2026-03-01": 1800 + 600 + 3000, "2026-03-02": 1800 + 3600}},
		{ByRefinement, map[string]float64{"r1": 4200, "": 6600}},
		{ByTemplate, map[string]float64{"base": 4200 + 6600}},
	}
	for _, tt := range tests {
		t.Run(tt.groupBy, func(t *testing.T) {
			got, err := r.Totals(sbs, tt.groupBy, t0.Add(-time.Hour), now, now)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("groups = %+v, want keys %v", got, tt.want)
			}
			for _, g := range got {
				if w, ok := tt.want[g.Key]; !ok || g.RunningSeconds != w {
					t.Errorf("group %q running %v, want %v", g.Key, g.RunningSeconds, w)
				}
			}
		})
	}
	if _, err := r.Totals(sbs, "color", t0, now, now); err == nil {
		t.Fatal("unknown groupBy accepted")
	}
}
