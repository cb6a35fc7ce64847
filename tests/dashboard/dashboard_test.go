// Package dashboard_test clicks through the dashboard in headless Chromium
// against a real `bin/sbx serve` with real sandboxes, a real template build
// and a real webhook receiver: sign in (no key kept in the browser), the
// live sandbox table with a metadata filter and a two-click kill, webhook
// deliveries as the receiver got them, a sandbox's page with a terminal
// that runs a typed command, its files and log, and the templates page
// with a build's log and tags. Screenshots of each page are saved (the
// test prints where).
package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sbxdev/sbx/sdk"
	"github.com/sbxdev/sbx/tests/harness"
)

// receiver is a webhook endpoint that records the event types it got.
type receiver struct {
	mu    sync.Mutex
	types []string
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var ev struct {
		Type string `json:"type"`
	}
	b, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(b, &ev)
	rc.mu.Lock()
	rc.types = append(rc.types, ev.Type)
	rc.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) got(typ string) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, t := range rc.types {
		if t == typ {
			return true
		}
	}
	return false
}

func TestDashboard(t *testing.T) {
	b := newBrowser(t) // skips (or fails under CI) before a server starts
	s := harness.StartServer(t, "--webhook-allow-private")
	c := s.Client(t)
	t.Cleanup(func() { // sandboxes outlive a server stop: kill ours first
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		list, _ := c.List(ctx, sdk.ListOptions{})
		for _, sb := range list {
			_ = c.Kill(ctx, sb.SandboxID)
		}
	})
	key := map[string]string{"X-API-Key": s.APIKey}

	// A real receiver, registered before anything happens.
	rc := &receiver{}
	recv := httptest.NewServer(rc)
	defer recv.Close()
	if r := s.Raw(t, "POST", "/events/webhooks", fmt.Sprintf(`{"name":"dash-hook","url":%q,"signatureSecret":"dash-secret-0123456789","events":["sandbox.lifecycle.created","sandbox.lifecycle.killed"]}`, recv.URL), key); r.Status != http.StatusCreated {
		t.Fatalf("create webhook: %d %s", r.Status, r.Body)
	}

	// And one whose receiver is down: its attempts fail and are retried.
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	if r := s.Raw(t, "POST", "/events/webhooks", fmt.Sprintf(`{"name":"dead-hook","url":%q,"signatureSecret":"dash-secret-0123456789","events":["sandbox.lifecycle.created"]}`, deadURL), key); r.Status != http.StatusCreated {
		t.Fatalf("create webhook: %d %s", r.Status, r.Body)
	}

	// Without a session the page loads and its data calls do not.
	if r := s.Raw(t, "GET", "/dashboard/api/v2/sandboxes", "", nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("data call without a session: %d", r.Status)
	}

	b.do(t, "sign in",
		chromedp.Navigate(s.URL+"/dashboard"),
		chromedp.WaitVisible(chromedp.CSS("#key")),
		chromedp.SendKeys(chromedp.CSS("#key"), s.APIKey),
		chromedp.Click(chromedp.CSS("#connect")),
		chromedp.WaitVisible(chromedp.CSS("#main")),
		waitText("#status", "connected (live)"),
	)
	// The key is nowhere the page's scripts could leak it from.
	if stored := eval[string](t, b, `JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie + document.body.innerText`); strings.Contains(stored, s.APIKey) {
		t.Fatalf("the API key is readable in the page after sign-in: %s", stored)
	}

	// Two sandboxes created through the API appear live; the metadata
	// filter keeps one.
	mk := func(owner string) string {
		sb, err := c.Create(t.Context(), sdk.CreateOptions{Template: "base", Timeout: 5 * time.Minute, Metadata: map[string]string{"owner": owner}})
		if err != nil {
			t.Fatal(err)
		}
		return sb.ID
	}
	alice, bob := mk("alice"), mk("bob")
	row := func(id string) string { return fmt.Sprintf(`#sandboxes tr[data-id="%s"]`, id) }
	b.do(t, "sandboxes appear live",
		chromedp.WaitVisible(chromedp.CSS(row(alice))), chromedp.WaitVisible(chromedp.CSS(row(bob))),
		until(fmt.Sprintf(`(document.querySelector('%s .cost')||{}).textContent.startsWith("$")`, row(alice))),
		until(fmt.Sprintf(`document.querySelector('%s .meta').textContent === "owner=alice"`, row(alice))),
		waitText("#stat-created", "2"))
	b.do(t, "metadata filter",
		chromedp.SendKeys(chromedp.CSS("#filter-metadata"), "owner=alice"),
		chromedp.Click(chromedp.CSS("#filter-apply")),
		chromedp.WaitNotPresent(chromedp.CSS(row(bob))),
		chromedp.WaitVisible(chromedp.CSS(row(alice))),
		waitText("#filter-note", "1 matching"),
		chromedp.Click(chromedp.CSS("#filter-clear")),
		chromedp.WaitVisible(chromedp.CSS(row(bob))))

	// Usage history beyond the last hour.
	b.do(t, "usage history range",
		chromedp.SetValue(chromedp.CSS("#range"), "168h"),
		chromedp.Evaluate[chromedp.Void](`document.querySelector("#range").dispatchEvent(new Event("change"))`),
		until(`document.querySelector("#chart-concurrency text").textContent.endsWith("· 168 points")`),
		waitText(".range-label", "(last 7 days)"))

	// A template build, whose events name the template.
	var tpl struct{ TemplateID, BuildID string }
	if r := s.Raw(t, "POST", "/v3/templates", `{"name":"dash-tpl"}`, key); r.Status != http.StatusAccepted || json.Unmarshal([]byte(r.Body), &tpl) != nil {
		t.Fatalf("request build: %d %s", r.Status, r.Body)
	}
	if r := s.Raw(t, "POST", "/v2/templates/"+tpl.TemplateID+"/builds/"+tpl.BuildID,
		`{"fromTemplate":"base","noSnapshot":true,"steps":[{"type":"RUN","args":["echo built-for-the-dashboard"]}]}`, key); r.Status >= 300 {
		t.Fatalf("start build: %d %s", r.Status, r.Body)
	}
	b.do(t, "build events name their template",
		until(`[...document.querySelectorAll("#events li")].some(li => li.textContent.includes("template.build.succeeded") && li.textContent.includes("template dash-tpl"))`))
	if r := s.Raw(t, "POST", "/templates/tags", `{"target":"dash-tpl","tags":["stable"]}`, key); r.Status >= 300 {
		t.Fatalf("tag the build: %d %s", r.Status, r.Body)
	}

	// Deliveries: what the receiver got, with the attempt's HTTP status.
	b.do(t, "webhook deliveries",
		chromedp.Evaluate[chromedp.Void](`loadDeliveries()`),
		until(`[...document.querySelectorAll("#deliveries tbody tr")].some(tr => tr.textContent.includes("sandbox.lifecycle.created") && tr.querySelector(".status-success") && tr.querySelector(".http").textContent === "204" && tr.querySelector(".attempts").textContent === "1")`))
	b.do(t, "failed deliveries show the attempt's error",
		until(`[...document.querySelectorAll("#deliveries tbody tr")].some(tr => tr.textContent.includes("dead-hook") && tr.querySelector(".status-pending, .status-failed") && tr.querySelector(".http").textContent === "" && tr.querySelector(".error").textContent.length > 0)`))
	if !rc.got("sandbox.lifecycle.created") {
		t.Fatal("the page shows a delivery the receiver never got")
	}
	b.shot(t, "overview-deliveries")

	// The sandbox page: details, metrics, files, log, and a live terminal.
	b.do(t, "sandbox page",
		chromedp.Click(chromedp.CSS(row(alice)+" a")),
		chromedp.WaitVisible(chromedp.CSS("#view-sandbox")),
		until(`[...document.querySelectorAll("#sb-metadata tr")].some(tr => tr.textContent === "owneralice")`),
		until(`document.querySelectorAll("#files tbody tr").length > 0`),
		until(`[...document.querySelectorAll("#sb-log li")].some(li => li.textContent.includes("sandbox.lifecycle.created"))`),
		// A few samples of memory in use (the shell and envd use some).
		until(`/^max [1-9].* · ([3-9]|\d\d+) points$/.test((document.querySelector("#sb-chart-mem text")||{}).textContent)`),
		chromedp.Click(chromedp.CSS("#term-start")),
		until(`document.querySelector("#term-status").textContent.startsWith("live")`),
		// Typed into xterm's input: the shell computes it, so the answer
		// on screen can only come from the sandbox.
		chromedp.Focus(chromedp.CSS("#terminal .xterm-helper-textarea")),
		typeText("echo sbx-$((6*7))-ok > /tmp/term.txt; cat /tmp/term.txt"),
		chromedp.KeyEvent("\r"),
		until(`document.querySelector("#terminal .xterm-rows").textContent.includes("sbx-42-ok")`),
		// The terminal's shell is one of the sandbox's processes.
		until(`[...document.querySelectorAll("#sb-procs tbody tr")].some(tr => tr.textContent.includes("/bin/bash -i -l"))`),
		until(`[...document.querySelectorAll("#sb-details tr")].some(tr => tr.textContent.startsWith("Cost so far$"))`),
	)
	// The command ran in the sandbox: the agent lists its file.
	b.do(t, "the agent sees what the terminal wrote",
		chromedp.Evaluate[chromedp.Void](`(async () => { const r = await rpc(location.hash.split("/")[2], "filesystem.Filesystem/ListDir", {path: "/tmp", depth: 1}); window.__tmp = r.entries.map(e => e.name).join(","); })()`),
		until(`(window.__tmp||"").split(",").includes("term.txt")`))
	b.shot(t, "sandbox-terminal")
	// Everything the page loaded, xterm.js included, came from sbx itself.
	if ext := eval[string](t, b, `performance.getEntriesByType("resource").map(e => e.name).filter(u => !u.startsWith(location.origin)).join(" ")`); ext != "" {
		t.Fatalf("the dashboard loaded resources from elsewhere: %s", ext)
	}

	// Templates: the build with its log, its tag, sandbox counts.
	b.do(t, "templates page",
		chromedp.Click(chromedp.CSS("#nav-templates")),
		chromedp.WaitVisible(chromedp.CSS("#view-templates")),
		until(`document.querySelector('#templates tr[data-id="base"] .spawns') && document.querySelector('#templates tr[data-id="base"] .spawns').textContent === "2"`),
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`#templates a.tpl[data-id="%s"]`, tpl.TemplateID))),
		until(fmt.Sprintf(`document.querySelector('#builds tr[data-build="%s"] .status-ready') !== null`, tpl.BuildID)),
		until(`document.querySelector("#build-log").textContent.includes("built-for-the-dashboard")`),
		until(`[...document.querySelectorAll("#tags tr")].some(tr => tr.textContent.includes("stable"))`),
	)
	b.shot(t, "templates")

	// Kill asks first: one click arms, the second kills.
	b.do(t, "kill needs a confirmation",
		chromedp.Click(chromedp.CSS("#nav-overview")),
		chromedp.WaitVisible(chromedp.CSS(row(bob))),
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`button.kill[data-id="%s"]`, bob))),
		waitText(fmt.Sprintf(`button.kill[data-id="%s"]`, bob), "Confirm kill"))
	if info, err := c.Get(t.Context(), bob); err != nil || info.State == "killed" {
		t.Fatalf("one click on Kill killed the sandbox: %+v %v", info, err)
	}
	b.do(t, "kill",
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`button.kill[data-id="%s"]`, bob))),
		chromedp.WaitNotPresent(chromedp.CSS(row(bob))))
	if info, err := c.Get(t.Context(), bob); err == nil && info.State != "killed" {
		t.Fatalf("after the confirmed kill the API still has the sandbox: %+v", info)
	}

	// Sign out ends the session on the server.
	b.do(t, "sign out",
		chromedp.Click(chromedp.CSS("#logout")),
		waitText("#status", "signed out"),
		chromedp.Navigate(s.URL+"/dashboard"),
		chromedp.WaitVisible(chromedp.CSS("#key")))
	if n := eval[int](t, b, `document.querySelectorAll("#sandboxes tbody tr").length`); n != 0 {
		t.Fatalf("after sign-out and reload the page still shows %d sandboxes", n)
	}
}
