package sandbox

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/datadir"
)

func TestPruneSnapshots(t *testing.T) {
	now := time.Now()
	old := now.Add(-72 * time.Hour)
	tests := []struct {
		name   string
		builds []string // recorded in the snapshot's builds file
		used   time.Time
		gone   bool
	}{
		{"serves a kept build", []string{"b-old", "b-kept"}, old, false},
		{"serves only dropped builds, unused", []string{"b-old"}, old, true},
		{"serves only dropped builds, used lately", []string{"b-old"}, now, false},
		{"unfinished, abandoned", nil, old, true},
		{"unfinished, being written", nil, now, false},
	}
	data := t.TempDir()
	m := New(Config{Data: datadir.Layout{Root: data}}, slog.New(slog.DiscardHandler), nil, nil, nil, nil)
	dirs := map[string]string{}
	for _, tt := range tests {
		dir := filepath.Join(data, "snapshots", tt.name)
		if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
			t.Fatal(err)
		}
		for _, b := range tt.builds {
			if err := noteSnapshotUse(dir, b); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chtimes(dir, tt.used, tt.used); err != nil {
			t.Fatal(err)
		}
		dirs[tt.name] = dir
	}
	n, err := m.TemplateSnapshots().PruneSnapshots(map[string]bool{"b-kept": true}, now.Add(-48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, tt := range tests {
		_, err := os.Stat(dirs[tt.name])
		if gone := os.IsNotExist(err); gone != tt.gone {
			t.Errorf("%s: removed = %v, want %v", tt.name, gone, tt.gone)
		}
		if tt.gone {
			want++
		}
	}
	if n != want {
		t.Errorf("PruneSnapshots removed %d, want %d", n, want)
	}
}

// noteSnapshotUse records each build once, however often it reuses the snapshot.
func TestNoteSnapshotUse(t *testing.T) {
	dir := t.TempDir()
	for _, b := range []string{"a", "b", "a"} {
		if err := noteSnapshotUse(dir, b); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(filepath.Join(dir, snapshotBuilds))
	if string(got) != "a\nb\n" {
		t.Fatalf("builds file = %q, want \"a\\nb\\n\"", got)
	}
}
