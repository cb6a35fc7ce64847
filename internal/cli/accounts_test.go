package cli

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/api"
	"github.com/sbxdev/sbx/internal/app"
	"github.com/sbxdev/sbx/internal/proxy"
	"github.com/sbxdev/sbx/internal/store"
)

// accountsServer serves the real team and key API over a data dir made by
// app.OpenStore and app.EnsureKeys, as `sbx serve` makes it, and records
// its URL there; it returns the data dir.
func accountsServer(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	log := slog.New(slog.DiscardHandler)
	st, _, err := app.OpenStore(t.Context(), dir, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := app.EnsureKeys(t.Context(), st, dir, log); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.New(log, noSandboxes{}, nil, st, proxy.New(nil, "", log)))
	t.Cleanup(srv.Close)
	if err := app.WriteServerURL(dir, srv.Listener.Addr().String()); err != nil {
		t.Fatal(err)
	}
	return dir
}

// noSandboxes is a server without sandboxes (team deletion lists them).
type noSandboxes struct{ api.Sandboxes }

func (noSandboxes) List(context.Context, store.ListFilter) ([]store.Sandbox, error) { return nil, nil }

var exportKey = regexp.MustCompile(`export E2B_API_KEY=(e2b_[0-9a-f]{40})`)

func TestTeamAndKeyCommands(t *testing.T) {
	dir := accountsServer(t)
	t.Setenv("E2B_API_KEY", "")
	t.Setenv("E2B_API_URL", "")
	t.Setenv("SBX_ADMIN_KEY", "")
	admin := func(args ...string) (string, error) {
		return sbx(t, t.Context(), append(args, "--data-dir", dir)...)
	}
	must := func(out string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return out
	}

	// Admin: the key and the server's address come from the data dir.
	out := must(admin("team", "create", "gamma", "--json", "--max-sandboxes", "4"))
	var created struct {
		ID, Name, APIKey string
		MaxSandboxes     *int
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.Name != "gamma" || !strings.HasPrefix(created.APIKey, "e2b_") ||
		created.MaxSandboxes == nil || *created.MaxSandboxes != 4 {
		t.Fatalf("team create --json: %v\n%s", err, out)
	}
	if out := must(admin("team", "list")); !strings.Contains(out, "gamma") || !strings.Contains(out, "default") {
		t.Errorf("team list:\n%s", out)
	}
	if out := must(admin("team", "update", "gamma", "--max-sandboxes", "default")); !strings.Contains(out, "server default") {
		t.Errorf("team update:\n%s", out)
	}

	// A team manages its own keys with its key.
	url, _ := app.ReadKeyFile(app.ServerURLFile(dir))
	team := func(key string, args ...string) (string, error) {
		return sbx(t, t.Context(), append(args, "--api-url", url, "--api-key", key)...)
	}
	out = must(team(created.APIKey, "key", "create", "ci"))
	m := exportKey.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("key create printed no key:\n%s", out)
	}
	ci := m[1]
	out = must(team(ci, "key", "list"))
	if !strings.Contains(out, "*") || !strings.Contains(out, ci[:6]+"…"+ci[len(ci)-4:]) || strings.Contains(out, ci) {
		t.Errorf("key list (a mask, the current key marked, never the key):\n%s", out)
	}
	// Rotate the key in use: the new one works, the old one does not.
	out = must(team(ci, "key", "rotate"))
	m = exportKey.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("key rotate printed no key:\n%s", out)
	}
	if _, err := team(ci, "key", "list"); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("the rotated-out key still works: %v", err)
	}
	rotated := m[1]
	var keys []struct{ ID, Name string }
	if err := json.Unmarshal([]byte(must(team(rotated, "key", "list", "--json"))), &keys); err != nil || len(keys) != 2 {
		t.Fatalf("key list --json: %v %+v", err, keys)
	}
	// The first key can go; then the last one needs --force.
	must(team(rotated, "key", "revoke", keys[0].ID))
	if out, err := team(rotated, "key", "revoke", keys[1].ID); err == nil || !strings.Contains(err.Error(), "last key") {
		t.Errorf("revoking the last key: %v\n%s", err, out)
	}

	// The admin acts on a team's keys with --team.
	if out := must(admin("key", "list", "--team", "gamma")); !strings.Contains(out, keys[1].ID) {
		t.Errorf("key list --team:\n%s", out)
	}
	if _, err := team(rotated, "team", "list"); err == nil {
		t.Error("team list with a team key as the admin key succeeded")
	}
	if out, err := admin("team", "delete", "gamma"); err == nil || !strings.Contains(err.Error(), "--yes") {
		t.Errorf("team delete without --yes: %v\n%s", err, out)
	}
	must(admin("team", "delete", "gamma", "--yes"))
	if _, err := team(rotated, "key", "list"); err == nil {
		t.Error("a deleted team's key still works")
	}

	// sbx env --admin prints both keys; key rotate --admin replaces the admin key.
	out = must(sbx(t, t.Context(), "env", "--data-dir", dir, "--admin"))
	if !strings.Contains(out, "export E2B_API_URL="+url) || !strings.Contains(out, "export SBX_ADMIN_KEY=sbx_admin_") {
		t.Errorf("env --admin:\n%s", out)
	}
	old, _ := app.ReadKeyFile(app.AdminKeyFile(dir))
	must(admin("key", "rotate", "--admin"))
	if now, _ := app.ReadKeyFile(app.AdminKeyFile(dir)); now == old {
		t.Error("key rotate --admin left the admin key file unchanged")
	}
	// The server may have the old key cached for up to half a second.
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		_, err := sbx(t, t.Context(), "team", "list", "--api-url", url, "--admin-key", old)
		if err != nil {
			break
		}
		if time.Since(start) > 2*time.Second {
			t.Fatal("the old admin key still works 2 s after its rotation")
		}
	}
	must(admin("team", "list"))
	if fi, err := os.Stat(app.AdminKeyFile(dir)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin-key: %v %v, want 0600", fi.Mode(), err)
	}
}
