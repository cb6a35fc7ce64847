package filesystem

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/fsnotify/fsnotify"
)

func TestEntry(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("12345"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", filepath.Join(dir, "l")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "p"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		typ   FileType
		perms string
		size  int64
	}{
		{"f", TypeFile, "-rw-------", 5},
		{"l", TypeSymlink, "Lrwxrwxrwx", 1},
		{"p", TypeUnspecified, "prw-r--r--", 0},
	}
	for _, tt := range tests {
		e, err := Entry(filepath.Join(dir, tt.name))
		if err != nil {
			t.Fatal(err)
		}
		if e.Type != tt.typ || e.Permissions != tt.perms || e.Size != tt.size || e.Name != tt.name || e.Path != filepath.Join(dir, tt.name) {
			t.Errorf("Entry(%s) = %+v", tt.name, e)
		}
	}
	l, _ := Entry(filepath.Join(dir, "l"))
	if l.SymlinkTarget == nil || *l.SymlinkTarget != file {
		t.Errorf("symlink target %v, want %s", l.SymlinkTarget, file)
	}
	if _, err := Entry(filepath.Join(dir, "missing")); err == nil {
		t.Error("Entry of a missing path succeeded")
	}
}

func TestConvertEvent(t *testing.T) {
	t.Parallel()
	w := &watch{root: "/w"}
	got := w.convert(fsnotify.Event{Name: "/w/a/b", Op: fsnotify.Create | fsnotify.Write})
	if len(got) != 2 || got[0] != (Event{Name: "a/b", Type: EventCreate}) || got[1] != (Event{Name: "a/b", Type: EventWrite}) {
		t.Errorf("convert = %+v", got)
	}
	got = w.convert(fsnotify.Event{Name: "/w/x", Op: fsnotify.Rename})
	if len(got) != 1 || got[0].Type != EventRename {
		t.Errorf("convert rename = %+v", got)
	}
}
