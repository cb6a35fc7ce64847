package runaway

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/events/eventstest"
	"github.com/sbxdev/sbx/internal/runtime"
	"github.com/sbxdev/sbx/internal/store"
)

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		in      string
		want    Policy
		wantErr string
	}{
		{in: "max-lifetime=10m action=kill", want: Policy{MaxLifetime: 10 * time.Minute, Action: "kill", IdlePercent: 1}},
		{in: "max-lifetime=3", want: Policy{MaxLifetime: 3 * time.Second, Action: "kill", IdlePercent: 1}},
		{in: "template=code-interpreter cpu=95% cpu-for=5m action=pause",
			want: Policy{Template: "code-interpreter", CPUPercent: 95, CPUFor: 5 * time.Minute, Action: "pause", IdlePercent: 1}},
		{in: "team=ci,idle=15m,idle-cpu=2%", want: Policy{Team: "ci", IdleFor: 15 * time.Minute, IdlePercent: 2, Action: "kill"}},
		{in: "cpu=90", want: Policy{CPUPercent: 90, CPUFor: time.Minute, Action: "kill", IdlePercent: 1}},
		{in: "", wantErr: "empty"},
		{in: "action=kill", wantErr: "checks nothing"},
		{in: "max-lifetime=soon", wantErr: "duration"},
		{in: "cpu=150%", wantErr: "percentage"},
		{in: "cpu-for=5m", wantErr: "needs cpu"},
		{in: "max-lifetime=1m action=explode", wantErr: "kill or pause"},
		{in: "maxlifetime=1m", wantErr: "unknown key"},
		{in: "10m", wantErr: "not key=value"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePolicy(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			// String round-trips.
			again, err := ParsePolicy(got.String())
			if err != nil || again != got {
				t.Fatalf("round trip of %q: %+v, %v", got.String(), again, err)
			}
		})
	}
}

type fake struct {
	mu      sync.Mutex
	live    []store.Sandbox
	cpu     map[string]time.Duration
	actions []string
}

func (f *fake) Live() []store.Sandbox {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]store.Sandbox(nil), f.live...)
}

func (f *fake) remove(id, what string) {
	f.actions = append(f.actions, what)
	for i, s := range f.live {
		if s.ID == id {
			f.live = append(f.live[:i], f.live[i+1:]...)
			return
		}
	}
}

func (f *fake) KillWithReason(_ context.Context, id, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.remove(id, "kill "+id+" "+reason)
	return nil
}

func (f *fake) PauseWithReason(_ context.Context, id, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.actions = append(f.actions, "pause "+id+" "+reason)
	f.setState(id, store.StatePaused)
	return nil
}

func (f *fake) setState(id string, st store.SandboxState) {
	for i := range f.live {
		if f.live[i].ID == id {
			f.live[i].State = st
		}
	}
}

func (f *fake) Stats(_ context.Context, id string) (runtime.Stats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return runtime.Stats{CPUUsage: f.cpu[id]}, nil
}

func TestDetector(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sb := func(id, tpl string) store.Sandbox {
		return store.Sandbox{ID: id, TeamID: "t1", TemplateID: tpl, State: store.StateRunning, CPUCount: 2, StartedAt: t0}
	}
	db, _ := eventstest.TempDB(t)
	log := events.NewLog(db, slog.New(slog.DiscardHandler))
	f := &fake{live: []store.Sandbox{sb("old", "base"), sb("spin", "ci"), sb("idle", "ci"), sb("calm", "ci")}, cpu: map[string]time.Duration{}}
	pol := func(s string) Policy {
		p, err := ParsePolicy(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	d := New([]Policy{
		pol("template=base max-lifetime=10m"),
		pol("template=ci cpu=95% cpu-for=2m action=pause"),
		pol("template=ci idle=3m"),
	}, f, f, log, slog.New(slog.DiscardHandler))
	now := t0
	d.SetClock(func() time.Time { return now })
	// Each minute: spin uses 2 CPU-minutes (100 % of 2 vCPU), calm 1 (50 %), idle none.
	for minute := 0; minute <= 12; minute++ {
		now = t0.Add(time.Duration(minute) * time.Minute)
		f.mu.Lock()
		f.cpu["spin"] += 2 * time.Minute
		f.cpu["calm"] += time.Minute
		f.mu.Unlock()
		d.Check(t.Context())
	}
	want := []string{"pause spin runaway", "kill idle runaway", "kill old runaway"}
	// Resumed after the runaway pause and still spinning: paused again
	// after another cpu-for.
	f.mu.Lock()
	f.setState("spin", store.StateRunning)
	f.mu.Unlock()
	for minute := 13; minute <= 16; minute++ {
		now = t0.Add(time.Duration(minute) * time.Minute)
		f.mu.Lock()
		f.cpu["spin"] += 2 * time.Minute
		f.cpu["calm"] += time.Minute
		f.mu.Unlock()
		d.Check(t.Context())
	}
	want = append(want, "pause spin runaway")
	if strings.Join(f.actions, ",") != strings.Join(want, ",") {
		t.Fatalf("actions = %v, want %v", f.actions, want)
	}
	evs, err := log.List(t.Context(), events.Filter{TeamID: "t1", Types: []string{events.SandboxRunawayDetected}, OrderAsc: true})
	if err != nil {
		t.Fatal(err)
	}
	var rules []string
	for _, ev := range evs {
		rules = append(rules, ev.SandboxID+":"+ev.EventData["rule"].(string))
	}
	if got := strings.Join(rules, ","); got != "spin:cpu,idle:idle,old:max-lifetime,spin:cpu" {
		t.Fatalf("detections = %s", got)
	}
}
