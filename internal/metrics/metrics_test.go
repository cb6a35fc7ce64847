package metrics

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/events/eventstest"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
)

type liveList []store.Sandbox

func (l liveList) Live() []store.Sandbox { return l }

func newTestMetrics(t *testing.T) *Metrics {
	t.Helper()
	db, _ := eventstest.TempDB(t)
	for _, q := range []string{
		`INSERT INTO webhooks (id, team_id, name, url, secret, events, enabled, created_at, updated_at, start_seq)
		 VALUES ('w1', 't1', 'a', 'http://x/', 's', '[]', 1, 0, 0, 0), ('w2', 't2', 'b', 'http://x/', 's', '[]', 1, 0, 0, 0)`,
		`INSERT INTO webhook_deliveries (id, webhook_id, team_id, event_id, event_seq, event_type, sandbox_id, body, state, max_attempts, next_attempt_at, created_at, updated_at)
		 VALUES ('d1', 'w1', 't1', 'e1', 1, 'x', '', '', 'delivered', 1, 0, 0, 0), ('d2', 'w1', 't1', 'e2', 2, 'x', '', '', 'delivered', 1, 0, 0, 0),
		        ('d3', 'w2', 't2', 'e3', 3, 'x', '', '', 'failed', 1, 0, 0, 0)`,
		`INSERT INTO webhook_attempts (id, delivery_id, webhook_id, attempt, status, duration_ms, request_url, request_headers, ts)
		 VALUES ('a1', 'd1', 'w1', 1, 'success', 1, 'u', '{}', 0), ('a2', 'd2', 'w1', 1, 'success', 1, 'u', '{}', 0),
		        ('a3', 'd3', 'w2', 1, 'failed', 1, 'u', '{}', 0), ('a4', 'd3', 'w2', 2, 'failed', 1, 'u', '{}', 0), ('a5', 'd3', 'w2', 3, 'failed', 1, 'u', '{}', 0)`,
	} {
		if _, err := db.ExecContext(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	live := liveList{
		{ID: "a", TeamID: "t1", TemplateID: "base", State: store.StateRunning},
		{ID: "b", TeamID: "t1", TemplateID: "base", State: store.StateRunning},
		{ID: "c", TeamID: "t2", TemplateID: "secrettpl", State: store.StatePaused},
	}
	m := New(live, sqlstore.New(db, nil), slog.New(slog.DiscardHandler))
	m.ObserveCreate("t1", "base", 300*time.Millisecond)
	m.OnBudgetRefusal("t2", "max_concurrent")
	m.OnBudgetRefusal("t2", "max_concurrent")
	m.OnRunawayAction("t1", "kill")
	return m
}

func scrape(t *testing.T, m *Metrics, ctx context.Context) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil).WithContext(ctx))
	body, _ := io.ReadAll(rec.Body)
	return string(body)
}

func TestScrapeScopes(t *testing.T) {
	t.Parallel()
	m := newTestMetrics(t)
	admin := auth.WithTeam(context.Background(), auth.Team{Admin: true})
	team1 := auth.WithTeam(context.Background(), auth.Team{ID: "t1"})
	adminAsTeam1 := auth.WithTeam(context.Background(), auth.Team{ID: "t1", Admin: true})
	all := []string{
		`sbx_sandboxes_running{team="t1",template="base"} 2`,
		`sbx_sandboxes_paused{team="t2",template="secrettpl"} 1`,
		`sbx_cluster_sandboxes{state="running"} 2`,
		`sbx_webhook_deliveries{state="delivered",team="t1"} 2`,
		`sbx_webhook_attempts_total{outcome="failed",team="t2"} 3`,
		`sbx_budget_refusals_total{limit="max_concurrent",team="t2"} 2`,
		`sbx_runaway_actions_total{action="kill",team="t1"} 1`,
		`sbx_sandbox_create_duration_seconds_bucket{team="t1",template="base",le="0.5"} 1`,
		`go_goroutines`,
	}
	tests := []struct {
		name      string
		ctx       context.Context
		want, not []string
	}{
		{"admin sees everything", admin, all, nil},
		{"a team sees its own series only", team1,
			[]string{all[0], all[3], all[6], all[7]},
			[]string{"t2", "secrettpl", "sbx_cluster_sandboxes", "go_goroutines", "sbx_budget_refusals_total"}},
		{"the admin acting as a team sees that team's", adminAsTeam1, []string{all[0]}, []string{"t2", "secrettpl"}},
		{"anonymous sees no team", context.Background(),
			[]string{`sbx_cluster_sandboxes{state="paused"} 1`, "go_goroutines"},
			[]string{"t1", "t2", "secrettpl", "base"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := scrape(t, m, tt.ctx)
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("missing %q in:\n%s", w, grepSbx(body))
				}
			}
			for _, n := range tt.not {
				if strings.Contains(body, n) {
					t.Errorf("%q must not appear in:\n%s", n, grepSbx(body))
				}
			}
		})
	}
}

func grepSbx(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "sbx_") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
