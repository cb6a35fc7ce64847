package sandbox

import (
	"os"
	"path/filepath"
	"testing"
)

// TestReplaceFile: the new content arrives by a rename, so a torn
// temporary file from a killed server is overwritten and never read, and
// another name for the old file (a hard link, as a reader holding it open
// would see) keeps the old content instead of a half-written one.
func TestReplaceFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "lifecycle.json")
	if err := os.WriteFile(p, []byte(`{"old":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(p, p+".held"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p+".tmp", []byte(`{"torn`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := replaceFile(p, []byte(`{"new":2}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{p: `{"new":2}`, p + ".held": `{"old":1}`} {
		if b, err := os.ReadFile(name); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", filepath.Base(name), b, err, want)
		}
	}
	if _, err := os.Stat(p + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}
}
