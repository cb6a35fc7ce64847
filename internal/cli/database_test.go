package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMigrateAndBackup: sbx migrate brings a new data dir's database to the
// current version and reports nothing left to do the second time; sbx
// backup copies it to a new private file and refuses to overwrite one.
func TestMigrateAndBackup(t *testing.T) {
	dir := t.TempDir()
	out, err := runCLI(t, "migrate", "--data-dir", dir)
	if err != nil || !strings.Contains(out, "applied 1") || !strings.Contains(out, "schema version") {
		t.Fatalf("first migrate: %v\n%s", err, out)
	}
	out, err = runCLI(t, "migrate", "--data-dir", dir, "--json")
	var st struct {
		Version, Latest int64
		Applied         []any
	}
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.Version != st.Latest || len(st.Applied) != 0 {
		t.Fatalf("second migrate: %v %+v\n%s", err, st, out)
	}
	dst := filepath.Join(dir, "copy.db")
	if out, err := runCLI(t, "backup", "--data-dir", dir, dst); err != nil {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() == 0 {
		t.Fatalf("backup file: %v %v", fi, err)
	}
	if _, err := runCLI(t, "backup", "--data-dir", dir, dst); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("backup over an existing file: %v", err)
	}
	if _, err := runCLI(t, "backup", "--data-dir", filepath.Join(dir, "nope"), filepath.Join(dir, "x.db")); err == nil {
		t.Fatal("backup of a data dir without a database succeeded")
	}
}
