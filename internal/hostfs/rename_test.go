package hostfs

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRenameReplacesPlantedLinks: publishing a file over a name a
// sandbox planted as a symlink replaces the link; the link's target is
// untouched, and names with a path in them are refused.
func TestRenameReplacesPlantedLinks(t *testing.T) {
	dir, host := plant(t)
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	sub, err := d.Sub("sub")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := d.WriteFile("new", []byte("published"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Rename("new", d, "abs-link"); err != nil {
		t.Fatalf("Rename over a symlink: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(host, "secret")); string(b) != "host secret" {
		t.Fatalf("the symlink's target changed: %q", b)
	}
	if b, err := d.ReadFile("abs-link", 100); err != nil || string(b) != "published" {
		t.Fatalf("after Rename: %q, %v", b, err)
	}
	if err := d.Rename("ok", sub, "moved"); err != nil {
		t.Fatalf("Rename across directories: %v", err)
	}
	if b, err := sub.ReadFile("moved", 100); err != nil || string(b) != "fine" {
		t.Fatalf("moved file: %q, %v", b, err)
	}
	for _, tt := range [][2]string{{"sub/ok", "x"}, {"abs-link", "../escape"}, {"..", "x"}, {"abs-link", ""}} {
		if err := d.Rename(tt[0], d, tt[1]); err == nil {
			t.Errorf("Rename(%q, %q) accepted a name with a path", tt[0], tt[1])
		}
	}
	if err := d.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}
