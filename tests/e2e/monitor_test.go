package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/monitor"
	"github.com/sbxdev/sbx/sdk"
	sdkwebhook "github.com/sbxdev/sbx/sdk/webhook"
)

// startServerArgs is StartServer with extra `sbx serve` flags (the
// monitoring tests need webhooks to loopback and fast policy checks).
func startServerArgs(t *testing.T, extra ...string) *Server { return StartServer(t, extra...) }

// receiver is a webhook endpoint on 127.0.0.1 that checks E2B signatures.
type receiver struct {
	srv    *httptest.Server
	secret string
	mu     sync.Mutex
	got    []map[string]any
	notify chan struct{}
}

func newReceiver(t *testing.T, secret string) *receiver {
	r := &receiver{secret: secret, notify: make(chan struct{}, 100)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if err := sdkwebhook.VerifyE2B(secret, body, req.Header.Get(sdkwebhook.HeaderE2BSignature)); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var ev map[string]any
		_ = json.Unmarshal(body, &ev)
		r.mu.Lock()
		r.got = append(r.got, ev)
		r.mu.Unlock()
		r.notify <- struct{}{}
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// wait returns the first received event matching ok, or fails after d.
func (r *receiver) wait(t *testing.T, d time.Duration, what string, ok func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.After(d)
	for {
		r.mu.Lock()
		for _, ev := range r.got {
			if ok(ev) {
				r.mu.Unlock()
				return ev
			}
		}
		r.mu.Unlock()
		select {
		case <-r.notify:
		case <-deadline:
			t.Fatalf("webhook receiver got no %s within %v; got %d events", what, d, len(r.got))
		}
	}
}

func data(ev map[string]any) map[string]any {
	d, _ := ev["eventData"].(map[string]any)
	return d
}

// apiJSON calls the sbx API with key and decodes the JSON answer.
func apiJSON(t *testing.T, s *Server, key, method, path string, in, out any) int {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(t.Context(), method, s.URL+path, body)
	req.Header.Set("X-API-Key", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

// setBudget sets the budget of the team of key, as only the admin may.
func setBudget(t *testing.T, s *Server, key string, limits map[string]any) int {
	t.Helper()
	var b struct {
		TeamID string `json:"teamId"`
	}
	if st := apiJSON(t, s, key, "GET", "/teams/me/budget", nil, &b); st != 200 || b.TeamID == "" {
		t.Fatalf("read the team's budget: %d", st)
	}
	return apiJSON(t, s, s.AdminKey(t), "PUT", "/teams/"+b.TeamID+"/budget", limits, nil)
}

func registerWebhook(t *testing.T, s *Server, key, url, secret string, types ...string) {
	t.Helper()
	in := map[string]any{"name": "monitor-test", "url": url, "events": types, "signatureSecret": secret}
	if st := apiJSON(t, s, key, "POST", "/events/webhooks", in, nil); st != http.StatusCreated {
		t.Fatalf("create webhook: status %d", st)
	}
}

// TestMonitoring drives budgets, runaway detection, usage and metrics
// against one real server with real sandboxes.
func TestMonitoring(t *testing.T) {
	s := startServerArgs(t, "--webhook-allow-private", "--pool", "base=0", "--pool", "code-interpreter=0",
		"--budget-interval", "1s", "--runaway-interval", "1s",
		"--runaway", "team=runaway max-lifetime=3s action=kill",
		"--runaway", "team=spinner cpu=10% cpu-for=3s action=pause")

	t.Run("budget max concurrent", func(t *testing.T) {
		c := s.Client(t)
		rcv := newReceiver(t, "budget-secret")
		registerWebhook(t, s, s.APIKey, rcv.srv.URL, "budget-secret", "team.budget.exceeded", "team.budget.warning")
		if st := setBudget(t, s, s.APIKey, map[string]any{"maxConcurrent": 2, "warnAtPercent": 100}); st != 200 {
			t.Fatalf("set budget: %d", st)
		}
		var sbs []*sdk.Sandbox
		for i := range 2 {
			sb, err := c.Create(t.Context(), sdk.CreateOptions{Template: "base", Timeout: 2 * time.Minute})
			if err != nil {
				t.Fatalf("create %d: %v", i+1, err)
			}
			sbs = append(sbs, sb)
		}
		_, err := c.Create(t.Context(), sdk.CreateOptions{Template: "base"})
		if !sdk.IsRateLimited(err) || !strings.Contains(err.Error(), "max concurrent") {
			t.Fatalf("third create: %v, want 429 naming max concurrent", err)
		}
		ev := rcv.wait(t, 30*time.Second, "team.budget.exceeded", func(ev map[string]any) bool {
			return ev["type"] == "team.budget.exceeded" && data(ev)["limit"] == "max_concurrent"
		})
		if data(ev)["max"] != float64(2) {
			t.Fatalf("exceeded event data %v", data(ev))
		}
		rcv.wait(t, 30*time.Second, "team.budget.warning", func(ev map[string]any) bool { return ev["type"] == "team.budget.warning" })
		// Usage of a running sandbox: allocated and measured.
		var u map[string]any
		if st := apiJSON(t, s, s.APIKey, "GET", "/sandboxes/"+sbs[0].ID+"/usage", nil, &u); st != 200 {
			t.Fatalf("sandbox usage: %d", st)
		}
		if u["state"] != "running" || u["measured"] == nil {
			t.Fatalf("sandbox usage = %v", u)
		}
		for _, sb := range sbs {
			if err := c.Kill(t.Context(), sb.ID); err != nil {
				t.Fatal(err)
			}
		}
		sb, err := c.Create(t.Context(), sdk.CreateOptions{Template: "base"})
		if err != nil {
			t.Fatalf("create after kills: %v", err)
		}
		_ = c.Kill(t.Context(), sb.ID)
		setBudget(t, s, s.APIKey, map[string]any{"maxConcurrent": 0, "warnAtPercent": 0})
	})

	t.Run("budget spend kills", func(t *testing.T) {
		key := s.CreateTeam(t, "spender")
		c := s.ClientWithKey(t, key)
		rcv := newReceiver(t, "spend-secret")
		registerWebhook(t, s, key, rcv.srv.URL, "spend-secret", "team.budget.exceeded", "sandbox.lifecycle.killed")
		sb, err := c.Create(t.Context(), sdk.CreateOptions{Template: "base", Timeout: 5 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		// A limit the running sandbox passes within a second or two.
		if st := setBudget(t, s, key, map[string]any{"maxDailySpendUsd": 0.00001, "action": "kill"}); st != 200 {
			t.Fatalf("set budget: %d", st)
		}
		rcv.wait(t, 60*time.Second, "spend exceeded", func(ev map[string]any) bool {
			return ev["type"] == "team.budget.exceeded" && data(ev)["limit"] == "max_daily_spend"
		})
		killed := rcv.wait(t, 60*time.Second, "killed with reason budget", func(ev map[string]any) bool {
			return ev["type"] == "sandbox.lifecycle.killed" && ev["sandboxId"] == sb.ID
		})
		if r := data(killed)["kill_reason"]; r != "budget" {
			t.Fatalf("kill_reason = %v, want budget", r)
		}
		if _, err := c.Create(t.Context(), sdk.CreateOptions{Template: "base"}); !sdk.IsRateLimited(err) {
			t.Fatalf("create over the spend limit: %v, want 429", err)
		}
	})

	t.Run("runaway max lifetime", func(t *testing.T) {
		key := s.CreateTeam(t, "runaway")
		c := s.ClientWithKey(t, key)
		rcv := newReceiver(t, "runaway-secret")
		registerWebhook(t, s, key, rcv.srv.URL, "runaway-secret", "sandbox.runaway.detected", "sandbox.lifecycle.killed")
		sb, err := c.Create(t.Context(), sdk.CreateOptions{Template: "base", Timeout: 5 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		det := rcv.wait(t, 60*time.Second, "sandbox.runaway.detected", func(ev map[string]any) bool {
			return ev["type"] == "sandbox.runaway.detected" && ev["sandboxId"] == sb.ID
		})
		if data(det)["rule"] != "max-lifetime" {
			t.Fatalf("detection = %v", data(det))
		}
		killed := rcv.wait(t, 60*time.Second, "killed", func(ev map[string]any) bool {
			return ev["type"] == "sandbox.lifecycle.killed" && ev["sandboxId"] == sb.ID
		})
		if r := data(killed)["kill_reason"]; r != "runaway" {
			t.Fatalf("kill_reason = %v, want runaway", r)
		}
		// The first team's sandboxes are not covered by team=runaway.
		other, err := s.Client(t).Create(t.Context(), sdk.CreateOptions{Template: "base"})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Second)
		if _, err := s.Client(t).Get(t.Context(), other.ID); err != nil {
			t.Fatalf("sandbox of another team was killed: %v", err)
		}
		_ = s.Client(t).Kill(t.Context(), other.ID)
	})

	t.Run("budget spend pauses", func(t *testing.T) {
		key := s.CreateTeam(t, "pauser")
		c := s.ClientWithKey(t, key)
		rcv := newReceiver(t, "pause-secret")
		registerWebhook(t, s, key, rcv.srv.URL, "pause-secret", "sandbox.lifecycle.paused")
		sb, err := c.Create(t.Context(), sdk.CreateOptions{Template: "base", Timeout: 5 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Kill(context.WithoutCancel(t.Context()), sb.ID)
		if st := setBudget(t, s, key, map[string]any{"maxMonthlySpendUsd": 0.00001, "action": "pause"}); st != 200 {
			t.Fatalf("set budget: %d", st)
		}
		paused := rcv.wait(t, 60*time.Second, "paused with reason budget", func(ev map[string]any) bool {
			return ev["type"] == "sandbox.lifecycle.paused" && ev["sandboxId"] == sb.ID
		})
		if r := data(paused)["pause_reason"]; r != "budget" {
			t.Fatalf("pause_reason = %v, want budget", r)
		}
		info, err := c.Get(t.Context(), sb.ID)
		if err != nil || info.State != "paused" {
			t.Fatalf("sandbox after the budget pause: %+v, %v", info, err)
		}
	})

	t.Run("runaway cpu spin", func(t *testing.T) {
		key := s.CreateTeam(t, "spinner")
		c := s.ClientWithKey(t, key)
		rcv := newReceiver(t, "spin-secret")
		registerWebhook(t, s, key, rcv.srv.URL, "spin-secret", "sandbox.runaway.detected", "sandbox.lifecycle.paused")
		// 10 % of the 2 vCPUs: two busy loops pass it even on a loaded CI
		// host, an idle sandbox does not.
		calm, err := c.Create(t.Context(), sdk.CreateOptions{Template: "base", Timeout: 5 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Kill(context.WithoutCancel(t.Context()), calm.ID)
		spin, err := c.Create(t.Context(), sdk.CreateOptions{Template: "base", Timeout: 5 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Kill(context.WithoutCancel(t.Context()), spin.ID)
		if _, err := spin.Commands.Start(t.Context(), "yes > /dev/null & yes > /dev/null & wait", sdk.RunOptions{}); err != nil {
			t.Fatal(err)
		}
		det := rcv.wait(t, 120*time.Second, "cpu runaway", func(ev map[string]any) bool {
			return ev["type"] == "sandbox.runaway.detected" && ev["sandboxId"] == spin.ID
		})
		t.Logf("detected: %v", data(det)["detail"])
		if data(det)["rule"] != "cpu" || data(det)["action"] != "pause" {
			t.Fatalf("detection = %v", data(det))
		}
		paused := rcv.wait(t, 30*time.Second, "paused", func(ev map[string]any) bool {
			return ev["type"] == "sandbox.lifecycle.paused" && ev["sandboxId"] == spin.ID
		})
		if r := data(paused)["pause_reason"]; r != "runaway" {
			t.Fatalf("pause_reason = %v, want runaway", r)
		}
		if info, err := c.Get(t.Context(), calm.ID); err != nil || info.State != "running" {
			t.Fatalf("the calm sandbox: %+v, %v (only the spinning one breaks the policy)", info, err)
		}
	})

	// sbx monitor as a consumer of sbx serve's E2B-compatible webhooks,
	// killing through sbx's E2B-compatible DELETE /sandboxes/{id}: the
	// same path it takes against E2B's cloud.
	t.Run("sbx monitor against an E2B-compatible server", func(t *testing.T) {
		key := s.CreateTeam(t, "monitored")
		mon, err := monitor.NewStandalone(t.Context(), monitor.StandaloneConfig{
			Secret: "mon-secret", DBPath: filepath.Join(t.TempDir(), "mon.db"), E2BAPIKey: key, E2BAPIURL: s.URL,
			Runaway: []string{"max-lifetime=3s action=kill"}, Interval: time.Second,
		}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		defer mon.Close()
		msrv := httptest.NewServer(mon)
		defer msrv.Close()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go mon.Run(ctx)
		registerWebhook(t, s, key, msrv.URL+"/webhook", "mon-secret", "sandbox.lifecycle.created", "sandbox.lifecycle.killed")
		c := s.ClientWithKey(t, key)
		sb, err := c.Create(t.Context(), sdk.CreateOptions{Template: "base", Timeout: 5 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			info, err := c.Get(t.Context(), sb.ID)
			if sdk.IsNotFound(err) || err == nil && info.State == "killed" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sbx monitor did not kill sandbox %s past max-lifetime=3s (state %v, err %v)", sb.ID, info, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		// The kill arrives back as a webhook and the monitor's view agrees.
		var evs []struct {
			Type      string         `json:"type"`
			SandboxID string         `json:"sandboxId"`
			EventData map[string]any `json:"eventData"`
		}
		deadline = time.Now().Add(30 * time.Second)
		for {
			req, _ := http.NewRequest("GET", msrv.URL+"/events/sandboxes/"+sb.ID+"?limit=100&orderAsc=true", nil)
			req.Header.Set("X-API-Key", mon.DashKey)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = json.NewDecoder(resp.Body).Decode(&evs)
			resp.Body.Close()
			var types []string
			for _, ev := range evs {
				types = append(types, ev.Type)
			}
			if strings.Join(types, ",") == "sandbox.lifecycle.created,sandbox.runaway.detected,sandbox.lifecycle.killed" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("monitor events for %s: %v", sb.ID, types)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("metrics and usage", func(t *testing.T) {
		resp, err := http.Get(s.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("/metrics without a key: %d, want 401", resp.StatusCode)
		}
		scrape := func(key string) string {
			req, _ := http.NewRequest("GET", s.URL+"/metrics", nil)
			req.Header.Set("X-API-Key", key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return string(body)
		}
		// The admin sees every team's series; each carries its team.
		all := scrape(s.AdminKey(t))
		for _, want := range []string{`sbx_budget_refusals_total{limit="max_concurrent",team="`, `sbx_runaway_actions_total{action="kill",team="`,
			`sbx_sandbox_create_duration_seconds_count{team="`, `sbx_budget_actions_total{action="kill",team="`, `sbx_cluster_sandboxes{state="running"}`} {
			if !strings.Contains(all, want) {
				t.Errorf("the admin's metrics lack %q", want)
			}
		}
		// A team sees its own: the default team's budget refusal, not the
		// other teams' runaway and budget kills.
		own := scrape(s.APIKey)
		if !strings.Contains(own, `sbx_budget_refusals_total{limit="max_concurrent",team="`) {
			t.Errorf("the team's metrics lack its own budget refusal")
		}
		for _, not := range []string{"sbx_runaway_actions_total", "sbx_budget_actions_total", "sbx_cluster_sandboxes", "go_goroutines"} {
			if strings.Contains(own, not) {
				t.Errorf("a team's metrics show %s, which is not its own", not)
			}
		}
		var rep struct {
			Total struct {
				VCPUSeconds float64 `json:"vcpuSeconds"`
				USD         float64 `json:"costUsd"`
			} `json:"total"`
			Groups []struct{ Key string } `json:"groups"`
		}
		if st := apiJSON(t, s, s.APIKey, "GET", "/usage?groupBy=template", nil, &rep); st != 200 {
			t.Fatalf("usage: %d", st)
		}
		if rep.Total.VCPUSeconds <= 0 || rep.Total.USD <= 0 || len(rep.Groups) != 1 || rep.Groups[0].Key != "base" {
			t.Fatalf("usage report = %+v", rep)
		}
		if st := apiJSON(t, s, s.APIKey, "GET", "/usage?groupBy=color", nil, nil); st != 400 {
			t.Fatalf("bad groupBy: %d", st)
		}
	})
}
