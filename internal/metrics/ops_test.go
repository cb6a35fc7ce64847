package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/template"
)

type queue map[string]int

func (q queue) QueueDepth() map[string]int { return q }

// TestOpsSeries: the series exist at 0 before their first event, count
// what happens, and are scoped like the rest (a built-in template's pool
// names no team; a team's template's names its team).
func TestOpsSeries(t *testing.T) {
	t.Parallel()
	m := newTestMetrics(t)
	m.SetWebhookQueue(queue{"t1": 3, "t2": 0})
	base := template.Template{ID: "base", Names: []string{"base"}}
	mine := template.Template{ID: "x7", Names: []string{"mine"}, TeamID: "t1"}
	m.PoolStarted(base)
	m.PoolStarted(mine)
	m.PoolClaim(mine, true)
	m.PoolClaim(mine, true)
	m.PoolClaim(mine, false)
	m.BuildStarted("t2", "slow")
	m.BuildStarted("t1", "mine")
	m.BuildFinished("t1", "mine", false, 3*time.Second)
	m.ObserveHTTP("POST /sandboxes", 201, 20*time.Millisecond)
	m.CreateDone(store.Sandbox{}, time.Millisecond, errdefs.Exhausted("over budget")) // the manager's observer
	m.CreateDone(store.Sandbox{TeamID: "t1", Alias: "mine"}, 20*time.Millisecond, nil)

	admin := scrape(t, m, auth.WithTeam(context.Background(), auth.Team{Admin: true}))
	for _, w := range []string{
		`sbx_pool_claims_total{result="hit",team="",template="base"} 0`,
		`sbx_pool_claims_total{result="miss",team="",template="base"} 0`,
		`sbx_pool_claims_total{result="hit",team="t1",template="mine"} 2`,
		`sbx_pool_claims_total{result="miss",team="t1",template="mine"} 1`,
		`sbx_template_build_duration_seconds_count{result="failed",team="t2",template="slow"} 0`,
		`sbx_template_build_duration_seconds_count{result="success",team="t2",template="slow"} 0`,
		`sbx_template_build_duration_seconds_bucket{result="failed",team="t1",template="mine",le="5"} 1`,
		`sbx_http_request_duration_seconds_bucket{code="201",route="POST /sandboxes",le="0.025"} 1`,
		`sbx_sandbox_create_failures_total{reason="resource_exhausted"} 1`,
		`sbx_sandbox_create_failures_total{reason="internal"} 0`,
		`sbx_sandbox_create_duration_seconds_bucket{team="t1",template="mine",le="0.05"} 1`,
		`sbx_webhook_queue_depth{team="t1"} 3`,
		`sbx_webhook_queue_depth{team="t2"} 0`,
		`sbx_cluster_webhook_queue_depth 3`,
	} {
		if !strings.Contains(admin, w) {
			t.Errorf("admin scrape lacks %q:\n%s", w, grepSbx(admin))
		}
	}
	anon := scrape(t, m, context.Background())
	if !strings.Contains(anon, `template="base"`) || strings.Contains(anon, "mine") || strings.Contains(anon, "slow") || strings.Contains(anon, "sbx_webhook_queue_depth{") {
		t.Errorf("anonymous scrape: built-in pools and totals only, no team's series:\n%s", grepSbx(anon))
	}
	t2 := scrape(t, m, auth.WithTeam(context.Background(), auth.Team{ID: "t2"}))
	if !strings.Contains(t2, `template="slow"`) || strings.Contains(t2, "mine") || strings.Contains(t2, `team="t1"`) {
		t.Errorf("team t2's scrape:\n%s", grepSbx(t2))
	}
}

// TestTemplateNamesCapped: past MaxTemplateNames distinct names, new ones
// label as "other"; names seen before keep theirs.
func TestTemplateNamesCapped(t *testing.T) {
	t.Parallel()
	m := New(nil, nil, slog.New(slog.DiscardHandler))
	for i := range MaxTemplateNames + 20 {
		m.BuildFinished("t1", fmt.Sprintf("tpl%d", i), true, time.Second)
	}
	m.BuildFinished("t1", "tpl0", true, time.Second)
	body := scrape(t, m, auth.WithTeam(context.Background(), auth.Team{Admin: true}))
	names := map[string]bool{}
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "sbx_template_build_duration_seconds_count{") {
			_, rest, _ := strings.Cut(l, `template="`)
			name, _, _ := strings.Cut(rest, `"`)
			names[name] = true
		}
	}
	if len(names) != MaxTemplateNames+1 || !names[OtherTemplate] || !names["tpl0"] || names[fmt.Sprint("tpl", MaxTemplateNames)] {
		t.Errorf("%d template labels (want %d names + %q)", len(names), MaxTemplateNames, OtherTemplate)
	}
	if !strings.Contains(body, `sbx_template_build_duration_seconds_count{result="success",team="t1",template="other"} 20`) ||
		!strings.Contains(body, `sbx_template_build_duration_seconds_count{result="success",team="t1",template="tpl0"} 2`) {
		t.Errorf("counts of other and of a name seen first:\n%s", grepSbx(body))
	}
}

func TestFailureReason(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err  error
		want string
	}{
		{errdefs.Exhausted("cap"), "resource_exhausted"},
		{fmt.Errorf("start: %w", context.Canceled), "canceled"},
		{fmt.Errorf("start: %w", context.DeadlineExceeded), "deadline_exceeded"},
		{errdefs.NotFound("no template"), "not_found"},
		{errdefs.Invalid("bad"), "invalid_argument"},
		{errors.New("crun failed"), "internal"},
	} {
		if got := failureReason(tt.err); got != tt.want {
			t.Errorf("failureReason(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}
}
