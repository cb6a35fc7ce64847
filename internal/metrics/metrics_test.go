package metrics

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/events/eventstest"
	"github.com/sbxdev/sbx/internal/store"
)

type liveList []store.Sandbox

func (l liveList) Live() []store.Sandbox { return l }

func TestScrape(t *testing.T) {
	db, _ := eventstest.TempDB(t)
	for _, q := range []string{
		`CREATE TABLE webhook_deliveries (state TEXT)`,
		`CREATE TABLE webhook_attempts (status TEXT)`,
		`INSERT INTO webhook_deliveries VALUES ('delivered'),('delivered'),('failed')`,
		`INSERT INTO webhook_attempts VALUES ('success'),('success'),('failed'),('failed'),('failed')`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	live := liveList{
		{ID: "a", TemplateID: "base", State: store.StateRunning},
		{ID: "b", TemplateID: "base", State: store.StateRunning},
		{ID: "c", TemplateID: "code-interpreter", State: store.StatePaused},
	}
	m := New(live, db, slog.New(slog.DiscardHandler))
	m.ObserveCreate("base", 300*time.Millisecond)
	m.OnBudgetRefusal("max_concurrent")
	m.OnBudgetRefusal("max_concurrent")
	m.OnRunawayAction("kill")
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`sbx_sandboxes_running{template="base"} 2`,
		`sbx_sandboxes_paused{template="code-interpreter"} 1`,
		`sbx_webhook_deliveries{state="delivered"} 2`,
		`sbx_webhook_attempts_total{outcome="failed"} 3`,
		`sbx_budget_refusals_total{limit="max_concurrent"} 2`,
		`sbx_runaway_actions_total{action="kill"} 1`,
		`sbx_sandbox_create_duration_seconds_bucket{template="base",le="0.5"} 1`,
		`sbx_sandbox_create_duration_seconds_bucket{template="base",le="0.25"} 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("missing %q in:\n%s", want, grepSbx(string(body)))
		}
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
