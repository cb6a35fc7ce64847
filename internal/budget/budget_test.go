package budget

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/events"
	"github.com/sbxdev/sbx/internal/events/eventstest"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
	"github.com/sbxdev/sbx/internal/usage"
)

// fakeSandboxes stands in for the manager: a live list plus recorded actions.
type fakeSandboxes struct {
	mu      sync.Mutex
	live    []store.Sandbox
	actions []string
}

func (f *fakeSandboxes) Live() []store.Sandbox {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]store.Sandbox(nil), f.live...)
}

func (f *fakeSandboxes) KillWithReason(_ context.Context, id, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.actions = append(f.actions, "kill "+id+" "+reason)
	return nil
}

func (f *fakeSandboxes) PauseWithReason(_ context.Context, id, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.actions = append(f.actions, "pause "+id+" "+reason)
	return nil
}

type fixture struct {
	b   *Budgets
	log *events.Log
	sbx *fakeSandboxes
	now time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	db, _ := eventstest.TempDB(t)
	f := &fixture{sbx: &fakeSandboxes{}, now: time.Date(2026, 5, 10, 12, 0, 0, 0, time.UTC)}
	clock := func() time.Time { return f.now }
	f.log = events.NewLog(db, slog.New(slog.DiscardHandler))
	f.log.SetClock(clock)
	u := usage.NewService(f.log, usage.Rates{VCPUSecond: 0.001, GiBSecond: 0}, f.sbx.Live)
	u.SetClock(clock)
	b, err := NewWithRepository(t.Context(), sqlstore.New(db, nil), f.log, u, f.sbx, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	b.SetClock(clock)
	f.b = b
	return f
}

// create stands in for a successful sandbox create after admission.
func (f *fixture) create(t *testing.T, id string) {
	t.Helper()
	if err := f.log.Append(t.Context(), &events.Event{Type: events.SandboxCreated, TeamID: "t1", SandboxID: id, SandboxTemplateID: "base"}); err != nil {
		t.Fatal(err)
	}
	f.sbx.mu.Lock()
	f.sbx.live = append(f.sbx.live, store.Sandbox{ID: id, TeamID: "t1", State: store.StateRunning, CPUCount: 1, MemoryMB: 512})
	f.sbx.mu.Unlock()
}

func (f *fixture) eventsOf(t *testing.T, typ string) []events.Event {
	t.Helper()
	evs, err := f.log.List(t.Context(), events.Filter{TeamID: "t1", Types: []string{typ}, OrderAsc: true})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestMaxConcurrent(t *testing.T) {
	f := newFixture(t)
	if err := f.b.Set(t.Context(), "t1", Limits{MaxConcurrent: 2, WarnAtPercent: 50}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		if err := f.b.Admit(t.Context(), "t1", "base"); err != nil {
			t.Fatalf("create %s refused: %v", id, err)
		}
		f.create(t, id)
	}
	err := f.b.Admit(t.Context(), "t1", "base")
	if !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), "max concurrent") {
		t.Fatalf("third create: err = %v, want resource exhausted naming max concurrent", err)
	}
	ex := f.eventsOf(t, events.TeamBudgetExceeded)
	if len(ex) != 1 || ex[0].EventData["limit"] != LimitConcurrent || ex[0].EventData["max"] != float64(2) {
		t.Fatalf("exceeded events = %+v", ex)
	}
	if w := f.eventsOf(t, events.TeamBudgetWarning); len(w) != 1 {
		t.Fatalf("want one warning (at 50%% of 2, once per hour), got %d", len(w))
	}
	// Another team is not limited by t1's budget.
	if err := f.b.Admit(t.Context(), "t2", "base"); err != nil {
		t.Fatalf("team t2: %v", err)
	}
}

func TestConcurrentAdmissionsCountInFlight(t *testing.T) {
	f := newFixture(t)
	if err := f.b.Set(t.Context(), "t1", Limits{MaxConcurrent: 1}); err != nil {
		t.Fatal(err)
	}
	if err := f.b.Admit(t.Context(), "t1", "base"); err != nil {
		t.Fatal(err)
	}
	// The first create has not finished: no event, not live yet.
	if err := f.b.Admit(t.Context(), "t1", "base"); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("second admission while the first is in flight: %v", err)
	}
	// A create that never completes stops counting after pendingTTL.
	f.now = f.now.Add(pendingTTL + time.Second)
	if err := f.b.Admit(t.Context(), "t1", "base"); err != nil {
		t.Fatalf("after the in-flight create expired: %v", err)
	}
}

func TestDailyCreates(t *testing.T) {
	f := newFixture(t)
	if err := f.b.Set(t.Context(), "t1", Limits{MaxDailyCreates: 1}); err != nil {
		t.Fatal(err)
	}
	if err := f.b.Admit(t.Context(), "t1", "base"); err != nil {
		t.Fatal(err)
	}
	f.create(t, "a")
	if err := f.b.Admit(t.Context(), "t1", "base"); err == nil || !strings.Contains(err.Error(), "per day") {
		t.Fatalf("second create of the day: %v", err)
	}
	f.now = f.now.Add(13 * time.Hour) // next UTC day
	if err := f.b.Admit(t.Context(), "t1", "base"); err != nil {
		t.Fatalf("next day: %v", err)
	}
}

func TestSpendLimitTakesAction(t *testing.T) {
	for _, action := range []string{ActionKill, ActionPause, ActionNone} {
		t.Run(action, func(t *testing.T) {
			f := newFixture(t)
			// 1 vCPU at $0.001/s: $0.06 per minute.
			if err := f.b.Set(t.Context(), "t1", Limits{MaxDailySpend: 0.1, Action: action}); err != nil {
				t.Fatal(err)
			}
			f.create(t, "a")
			f.now = f.now.Add(time.Minute)
			if err := f.b.Check(t.Context()); err != nil {
				t.Fatal(err)
			}
			if len(f.sbx.actions) != 0 || len(f.eventsOf(t, events.TeamBudgetExceeded)) != 0 {
				t.Fatalf("under budget: actions %v", f.sbx.actions)
			}
			f.now = f.now.Add(time.Minute) // $0.12 spent
			for range 2 {
				if err := f.b.Check(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			ex := f.eventsOf(t, events.TeamBudgetExceeded)
			if len(ex) != 1 || ex[0].EventData["limit"] != LimitDailySpend {
				t.Fatalf("want one exceeded event per period, got %+v", ex)
			}
			want := map[string]string{ActionKill: "kill a budget", ActionPause: "pause a budget"}[action]
			if want == "" && len(f.sbx.actions) != 0 || want != "" && (len(f.sbx.actions) == 0 || f.sbx.actions[0] != want) {
				t.Fatalf("actions = %v, want %q", f.sbx.actions, want)
			}
			if err := f.b.Admit(t.Context(), "t1", "base"); err == nil || !strings.Contains(err.Error(), "max spend per day") {
				t.Fatalf("create over spend: %v", err)
			}
		})
	}
}

func TestSpendWarningOncePerPeriod(t *testing.T) {
	f := newFixture(t)
	// $0.06 per minute against $0.10 per day, warn at 50 %.
	if err := f.b.Set(t.Context(), "t1", Limits{MaxDailySpend: 0.1, WarnAtPercent: 50}); err != nil {
		t.Fatal(err)
	}
	f.create(t, "a")
	f.now = f.now.Add(45 * time.Second) // $0.045: under 50 %
	if err := f.b.Check(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(f.eventsOf(t, events.TeamBudgetWarning)); n != 0 {
		t.Fatalf("%d warnings under the threshold", n)
	}
	for range 3 {
		f.now = f.now.Add(10 * time.Second) // $0.055, $0.065, $0.075
		if err := f.b.Check(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	w := f.eventsOf(t, events.TeamBudgetWarning)
	if len(w) != 1 || w[0].EventData["limit"] != LimitDailySpend || w[0].EventData["period"] != "2026-05-10" {
		t.Fatalf("warnings = %+v, want one for max_daily_spend on 2026-05-10", w)
	}
	if len(f.eventsOf(t, events.TeamBudgetExceeded)) != 0 || len(f.sbx.actions) != 0 {
		t.Fatal("exceeded before the limit")
	}
	// The next UTC day warns again.
	f.now = time.Date(2026, 5, 11, 0, 5, 0, 0, time.UTC) // 5 min today: $0.30
	if err := f.b.Check(t.Context()); err != nil {
		t.Fatal(err)
	}
	if w := f.eventsOf(t, events.TeamBudgetWarning); len(w) != 2 {
		t.Fatalf("warnings after midnight = %d, want 2", len(w))
	}
}

// TestObservedCountsAlert is sbx monitor's case: sandboxes created
// elsewhere (E2B's cloud) go over a limit; the budget can only alert.
func TestObservedCountsAlert(t *testing.T) {
	f := newFixture(t)
	if err := f.b.Set(t.Context(), "t1", Limits{MaxConcurrent: 2, MaxDailyCreates: 2, WarnAtPercent: 100}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c"} {
		f.create(t, id)
		if err := f.b.Check(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.b.Check(t.Context()); err != nil {
		t.Fatal(err)
	}
	limits := func(typ string) string {
		var out []string
		for _, ev := range f.eventsOf(t, typ) {
			out = append(out, ev.EventData["limit"].(string))
		}
		return strings.Join(out, ",")
	}
	// Warnings at 2 of 2 (once each), exceeded at 3 of 2 (once each).
	if got := limits(events.TeamBudgetWarning); got != "max_concurrent,max_daily_creates" {
		t.Errorf("warnings: %s", got)
	}
	if got := limits(events.TeamBudgetExceeded); got != "max_concurrent,max_daily_creates" {
		t.Errorf("exceeded: %s", got)
	}
}

func TestREST(t *testing.T) {
	f := newFixture(t)
	mux := http.NewServeMux()
	f.b.Register(mux)
	srv := httptest.NewServer(eventstest.AsTeam(mux))
	defer srv.Close()
	do := func(as, method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		switch as {
		case "team":
			req.Header.Set(eventstest.TeamHeader, "t1")
		case "admin for t1":
			req.Header.Set(eventstest.TeamHeader, "t1")
			req.Header.Set(eventstest.AdminHeader, "1")
		case "admin":
			req.Header.Set(eventstest.AdminHeader, "1")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		as, method, path, body string
		status                 int
		contains               string
	}{
		{"team", "PUT", "/teams/me/budget", `{"maxConcurrent":3}`, 403, `needs the admin key`},
		{"team", "PUT", "/teams/t1/budget", `{"maxConcurrent":3}`, 403, `needs the admin key`},
		{"admin for t1", "PUT", "/teams/me/budget", `{"maxConcurrent":3,"warnAtPercent":80}`, 200, `"maxConcurrent":3`},
		{"admin", "PUT", "/teams/t1/budget", `{"action":"kill"}`, 200, `"action":"kill"`},
		{"admin", "PUT", "/teams/me/budget", `{"action":"kill"}`, 403, `X-Team-ID`},
		{"team", "GET", "/teams/me/budget", ``, 200, `"warnAtPercent":80`},
		{"team", "GET", "/teams/t1/budget", ``, 200, `"action":"kill"`},
		{"team", "GET", "/teams/t2/budget", ``, 404, `use your own team`},
		{"admin", "GET", "/teams/t2/budget", ``, 200, `"teamId":"t2"`},
		{"admin", "PUT", "/teams/t1/budget", `{"maxConcurrent":-1}`, 400, `maxConcurrent must be`},
		{"admin", "PUT", "/teams/t1/budget", `{"action":"explode"}`, 400, `use none, pause or kill`},
		{"admin", "PUT", "/teams/t1/budget", `{"maxConcurent":1}`, 400, `unknown field \"maxConcurent\" in the request body; the fields are action, maxConcurrent`},
		{"team", "GET", "/teams/me/budget", ``, 200, `"maxConcurrent":3`},
	}
	for _, tt := range tests {
		status, body := do(tt.as, tt.method, tt.path, tt.body)
		if status != tt.status || !strings.Contains(body, tt.contains) {
			t.Errorf("as %s, %s %s %s: %d %s, want %d containing %q", tt.as, tt.method, tt.path, tt.body, status, body, tt.status, tt.contains)
		}
	}
}
