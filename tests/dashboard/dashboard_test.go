// Package dashboard_test drives the live dashboard in headless Chromium
// (Debian's chromium, through chromedp) against a real `bin/sbx serve`:
// load /dashboard, enter the key, see a sandbox created through the API
// appear without a reload, click Kill, see it go. A screenshot is saved in
// tests/dashboard/artifacts/ (gitignored).
package dashboard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sbxdev/sbx/sdk"
)

// require skips without root, crun or chromium, or fails under
// SBX_REQUIRE_INTEGRATION=1.
func require(t *testing.T) string {
	t.Helper()
	var missing string
	chromium, err := exec.LookPath("chromium")
	switch {
	case os.Geteuid() != 0:
		missing = "root"
	case func() bool { _, err := exec.LookPath("crun"); return err != nil }():
		missing = "crun on PATH (apt-get install crun)"
	case err != nil:
		missing = "chromium on PATH (apt-get install chromium; scripts/install-deps.sh does)"
	}
	if missing == "" {
		return chromium
	}
	if os.Getenv("SBX_REQUIRE_INTEGRATION") == "1" {
		t.Fatalf("the dashboard test needs %s (SBX_REQUIRE_INTEGRATION=1 turns this skip into a failure)", missing)
	}
	t.Skipf("the dashboard test needs %s; skipping", missing)
	return ""
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		if filepath.Dir(dir) == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = filepath.Dir(dir)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// server starts bin/sbx serve and returns its URL and API key.
func server(t *testing.T) (string, string) {
	t.Helper()
	root := repoRoot(t)
	bin := filepath.Join(root, "bin", "sbx")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s is missing: run `make build` first", bin)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dataDir, err := os.MkdirTemp("", "sbx-dashboard-")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuf{}
	cmd := exec.Command(bin, "serve", "--listen", addr, "--data-dir", dataDir, "--pool", "base=0", "--pool", "code-interpreter=0")
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	url := "http://" + addr
	var key string
	t.Cleanup(func() {
		// Sandboxes outlive a server stop (they are reattached on start):
		// kill what is left first.
		if key != "" {
			if c, err := sdk.NewClient(sdk.Config{APIURL: url, SandboxURL: url, APIKey: key}); err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				list, _ := c.List(ctx, sdk.ListOptions{})
				for _, sb := range list {
					_ = c.Kill(ctx, sb.SandboxID)
				}
				cancel()
			}
		}
		if t.Failed() {
			t.Logf("sbx serve log:\n%s", logs.String())
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		_ = os.RemoveAll(dataDir)
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(filepath.Join(dataDir, "api-key")); err == nil && len(b) > 0 {
			if resp, err := http.Get(url + "/health"); err == nil {
				resp.Body.Close()
				key = strings.TrimSpace(string(b))
				break
			}
		}
		select {
		case <-exited:
			t.Fatalf("sbx serve exited: %s", logs.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("sbx serve did not start within 60s")
		}
	}
	// Wait for the API (503 while starting) and template "base".
	deadline = time.Now().Add(20 * time.Minute)
	for {
		req, _ := http.NewRequest("GET", url+"/templates", nil)
		req.Header.Set("X-API-Key", key)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			var tpls []struct {
				TemplateID  string `json:"templateID"`
				BuildStatus string `json:"buildStatus"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&tpls)
			resp.Body.Close()
			for _, tp := range tpls {
				if tp.TemplateID == "base" && tp.BuildStatus == "ready" {
					return url, key
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("template base not ready")
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func TestDashboardLive(t *testing.T) {
	chromium := require(t)
	url, key := server(t)

	// Without a key the page loads; data calls do not.
	resp, err := http.Get(url + "/dashboard")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /dashboard: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if resp, err := http.Get(url + "/analytics/summary"); err != nil || resp.StatusCode != 401 {
		t.Fatalf("GET /analytics/summary without a key: %v %v", resp.StatusCode, err)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.NoFirstRun, chromedp.WindowSize(1280, 1000))
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	defer cancelAlloc()
	var consoleMu sync.Mutex
	var console []string
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(func(f string, a ...any) {
		consoleMu.Lock()
		console = append(console, fmt.Sprintf(f, a...))
		consoleMu.Unlock()
	}))
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	defer cancelT()

	err = chromedp.Do(ctx,
		chromedp.Navigate(url+"/dashboard"),
		chromedp.WaitVisible(chromedp.CSS("#key")),
		chromedp.SendKeys(chromedp.CSS("#key"), key),
		chromedp.Click(chromedp.CSS("#connect")),
		chromedp.WaitVisible(chromedp.CSS("#main")),
		waitText("#status", "connected (live)"),
	)
	if err != nil {
		t.Fatalf("log in: %v", err)
	}

	// Create a sandbox through the API: the page must show it without a reload.
	c, err := sdk.NewClient(sdk.Config{APIURL: url, SandboxURL: url, APIKey: key})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := c.Create(t.Context(), sdk.CreateOptions{Template: "base", Timeout: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	row := fmt.Sprintf(`#sandboxes tr[data-id="%s"]`, sb.ID)
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(row))); err != nil {
		t.Fatalf("sandbox %s did not appear live: %v", sb.ID, err)
	}
	// Its cost and measured use come from /sandboxes/{id}/usage.
	if err := chromedp.Do(ctx, chromedp.Poll[chromedp.Void](fmt.Sprintf(`(document.querySelector('%s .cost')||{}).textContent.startsWith("$") && document.querySelector('%s .used').textContent.includes("CPU")`, row, row),
		chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("usage cells of %s not filled: %v", sb.ID, err)
	}
	// Totals follow the stream too.
	if err := chromedp.Do(ctx, waitText("#stat-created", "1")); err != nil {
		t.Fatalf("summary not refreshed after the create: %v", err)
	}
	shot := screenshot(t, ctx)

	// Kill it from the page.
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`button.kill[data-id="%s"]`, sb.ID))),
		chromedp.WaitNotPresent(chromedp.CSS(row)),
	)
	var gone bool
	if err == nil {
		gone, err = chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(`document.querySelector('#sandboxes tr[data-id="%s"]') === null`, sb.ID)))
	}
	if err != nil || !gone {
		t.Fatalf("kill from the page: %v (gone=%v)", err, gone)
	}
	info, err := c.Get(t.Context(), sb.ID)
	if err == nil && info.State != "killed" {
		t.Fatalf("after Kill in the page the API still has the sandbox: %+v", info)
	}
	t.Logf("screenshot: %s", shot)
}

// waitText waits until the element's text equals want.
func waitText(sel, want string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](fmt.Sprintf(`document.querySelector(%q).textContent === %q`, sel, want), chromedp.WithPollingTimeout(30*time.Second))
}

func screenshot(t *testing.T, ctx context.Context) string {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100 = PNG
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := filepath.Join(repoRoot(t), "tests", "dashboard", "artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "dashboard-live.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
