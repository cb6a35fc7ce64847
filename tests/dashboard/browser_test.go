package dashboard_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

	"github.com/sbxdev/sbx/internal/testenv"
	"github.com/sbxdev/sbx/tests/harness"
)

// browser is one headless Chromium tab (Debian's chromium, through
// chromedp) and the directory its screenshots go to.
type browser struct {
	ctx       context.Context
	artifacts string
	mu        sync.Mutex
	console   []string
}

// newBrowser starts Chromium for the test. Screenshots go to
// $SBX_ARTIFACTS/dashboard when set (CI keeps that directory), else to
// tests/dashboard/artifacts (gitignored); the test prints where.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	testenv.Require(t, testenv.Binary("chromium", "apt-get install chromium; scripts/install-deps.sh does"))
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(harness.RepoRoot(t), "tests", "dashboard", "artifacts")
	if d := os.Getenv("SBX_ARTIFACTS"); d != "" {
		dir = filepath.Join(d, "dashboard")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(filepath.Join(dir, "failure.png")) // from an earlier run
	t.Logf("screenshots: %s", dir)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.NoFirstRun, chromedp.WindowSize(1280, 1000))
	// Not t.Context(): it ends before cleanups, which still take the
	// failure screenshot.
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	b := &browser{artifacts: dir}
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(func(f string, a ...any) {
		b.mu.Lock()
		b.console = append(b.console, fmt.Sprintf(f, a...))
		b.mu.Unlock()
	}))
	t.Cleanup(cancel)
	b.ctx = ctx
	// The first call starts the browser, tied to the context it gets:
	// give it the long-lived one, not a per-step deadline.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b.mu.Lock()
			t.Logf("browser log:\n%s", strings.Join(b.console, "\n"))
			b.mu.Unlock()
			b.shot(t, "failure")
		}
	})
	return b
}

// do runs actions with a deadline, failing the test with what.
func (b *browser) do(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 90*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eval returns the value of a JavaScript expression in the page.
func eval[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// until waits for a JavaScript condition (what the page shows).
func until(cond string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingTimeout(60*time.Second))
}

// waitText waits until the element's text equals want.
func waitText(sel, want string) chromedp.Action[chromedp.Void] {
	return until(fmt.Sprintf(`(document.querySelector(%q)||{}).textContent === %q`, sel, want))
}

// typeText types into the focused element as text input (what an IME or a
// paste does; chromedp's key events would deliver each printable key to
// xterm.js twice, as keydown text and as a char event).
func typeText(text string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, input.InsertText, input.InsertTextParams{Text: text})
		return err
	})
}

// shot saves a full-page PNG named name.png and returns its path.
func (b *browser) shot(t *testing.T, name string) string {
	t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100)) // 100 = PNG
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return ""
	}
	path := filepath.Join(b.artifacts, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	return path
}
