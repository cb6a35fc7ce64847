package app

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
)

func TestEnsureKeys(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	log := slog.New(slog.DiscardHandler)
	st, _, err := OpenStore(t.Context(), dir, log)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := EnsureKeys(t.Context(), st, dir, log); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{APIKeyFile(dir), AdminKeyFile(dir)} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, want mode 0600", f, err)
		}
	}
	admin, _ := ReadKeyFile(AdminKeyFile(dir))
	if _, _, isAdmin, err := st.ResolveAPIKey(t.Context(), admin); err != nil || !isAdmin {
		t.Fatalf("the admin key file's key: admin %v, %v", isAdmin, err)
	}
	// A restart keeps both keys.
	team, _ := ReadKeyFile(APIKeyFile(dir))
	if err := EnsureKeys(t.Context(), st, dir, log); err != nil {
		t.Fatal(err)
	}
	if a, _ := ReadKeyFile(AdminKeyFile(dir)); a != admin {
		t.Error("a restart changed the admin key")
	}
	if k, _ := ReadKeyFile(APIKeyFile(dir)); k != team {
		t.Error("a restart changed the first team's key")
	}
	// A deleted admin key file gets a new key; the old one stops working.
	if err := os.Remove(AdminKeyFile(dir)); err != nil {
		t.Fatal(err)
	}
	if err := EnsureKeys(t.Context(), st, dir, log); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := st.ResolveAPIKey(t.Context(), admin); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("the old admin key after its file was deleted: %v", err)
	}
	// A file that holds no admin key is refused, not trusted.
	if err := os.WriteFile(AdminKeyFile(dir), []byte("e2b_"+strings.Repeat("0", 40)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := EnsureKeys(t.Context(), st, dir, log); err == nil || !strings.Contains(err.Error(), "does not hold an admin key") {
		t.Errorf("a team key in admin-key: %v", err)
	}
}

func TestWriteServerURL(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for addr, want := range map[string]string{
		"127.0.0.1:3000": "http://127.0.0.1:3000", "0.0.0.0:3100": "http://127.0.0.1:3100",
		"[::]:3200": "http://[::1]:3200", "192.0.2.2:3300": "http://192.0.2.2:3300",
	} {
		if err := WriteServerURL(dir, addr); err != nil {
			t.Fatal(err)
		}
		if got, _ := ReadKeyFile(ServerURLFile(dir)); got != want {
			t.Errorf("WriteServerURL(%s) wrote %q, want %q", addr, got, want)
		}
	}
}

// noTeamsYet is a store read by a server before another server sharing
// the database created the first team: its list is empty, its insert
// finds "default" taken.
type noTeamsYet struct{ store.Store }

func (noTeamsYet) Teams(context.Context) ([]store.Team, error) { return nil, nil }

// TestEnsureKeysRace: two servers starting together on an empty shared
// database both see no team; the one that loses the insert of "default"
// starts anyway, with no API key file of its own (the winner has it).
func TestEnsureKeysRace(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	first := filepath.Join(t.TempDir(), "first")
	st, _, err := OpenStore(t.Context(), first, log)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := EnsureKeys(t.Context(), st, first, log); err != nil {
		t.Fatal(err)
	}
	second := t.TempDir()
	if err := EnsureKeys(t.Context(), noTeamsYet{st}, second, log); err != nil {
		t.Fatalf("the server that lost the race to create team default: %v", err)
	}
	if _, err := os.Stat(APIKeyFile(second)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the loser wrote an API key file (%v); the key that works is the winner's", err)
	}
	if teams, _ := st.Teams(t.Context()); len(teams) != 1 {
		t.Errorf("teams after the race: %+v, want one default", teams)
	}
}
