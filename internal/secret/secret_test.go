package secret_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/secret"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
)

func newService(t *testing.T) (*secret.Service, *sqldb.DB, string) {
	t.Helper()
	dir := t.TempDir()
	db, err := sqldb.Open(t.Context(), filepath.Join(dir, "sbx.db"), sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key := filepath.Join(dir, "secrets.key")
	sv, err := secret.New(sqlstore.NewSecrets(db), key)
	if err != nil {
		t.Fatal(err)
	}
	return sv, db, key
}

// Values are stored encrypted, bound to their row: a ciphertext copied
// onto another team's secret does not decrypt there, and the key file is
// root's alone.
func TestSecretsAreSealedAndBoundToTheirRow(t *testing.T) {
	sv, db, key := newService(t)
	ctx := t.Context()
	const value = "hunter2-plaintext-value"
	a, err := sv.Create(ctx, "team-a", "Token", value, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "token" || a.Version != 1 {
		t.Errorf("created %+v, want name token version 1", a)
	}
	var stored string
	if err := db.QueryRowContext(ctx, `SELECT ciphertext FROM secrets WHERE id = ?`, a.ID).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stored, value) {
		t.Fatal("the value is stored in plaintext")
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v %v", fi.Mode(), err)
	}
	env, err := sv.Resolve(ctx, "team-a", map[string]string{"T": "x${e2b.secrets.token}y", "P": "plain"})
	if err != nil || env["T"] != "x"+value+"y" || env["P"] != "plain" {
		t.Fatalf("Resolve = %v, %v", env, err)
	}
	if _, err := sv.Resolve(ctx, "team-b", map[string]string{"T": "${e2b.secrets.token}"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("another team resolved team a's secret: %v", err)
	}
	// Move a's ciphertext onto team b's secret of the same name.
	if _, err := sv.Create(ctx, "team-b", "token", "b's own", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `UPDATE secrets SET ciphertext = ? WHERE team_id = 'team-b'`, stored); err != nil {
		t.Fatal(err)
	}
	if env, err := sv.Resolve(ctx, "team-b", map[string]string{"T": "${e2b.secrets.token}"}); err == nil {
		t.Errorf("a ciphertext moved to another team's row decrypted: %q", env["T"])
	}
	// A second service on the same key file reads what the first wrote.
	again, err := secret.New(sqlstore.NewSecrets(db), key)
	if err != nil {
		t.Fatal(err)
	}
	if env, err := again.Resolve(ctx, "team-a", map[string]string{"T": "${e2b.secrets.token}"}); err != nil || env["T"] != value {
		t.Errorf("after a restart: %v, %v", env, err)
	}
}

func TestSecretNames(t *testing.T) {
	sv, _, _ := newService(t)
	for _, name := range []string{"", "sec_abc", "has space", strings.Repeat("a", 200), "../x"} {
		if _, err := sv.Create(t.Context(), "t", name, "v", nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("name %q: %v, want invalid", name, err)
		}
	}
}

// Processes of one database with different key files are told so at
// start (CheckKey), not only when a create names a secret.
func TestCheckKey(t *testing.T) {
	sv, db, key := newService(t)
	repo := sqlstore.NewSecrets(db)
	if err := sv.CheckKey(t.Context(), repo); err != nil {
		t.Fatalf("CheckKey with nothing stored = %v", err)
	}
	if _, err := sv.Create(t.Context(), "team-a", "token", "v", nil); err != nil {
		t.Fatal(err)
	}
	same, err := secret.New(repo, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := same.CheckKey(t.Context(), repo); err != nil {
		t.Errorf("CheckKey with the same key file = %v", err)
	}
	other, err := secret.New(repo, filepath.Join(t.TempDir(), "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := other.CheckKey(t.Context(), repo); err == nil || !strings.Contains(err.Error(), "same secrets.key") {
		t.Errorf("CheckKey with another key file = %v; want an error saying to share the key", err)
	}
}
