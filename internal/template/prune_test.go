package template

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/store"
)

func TestPrune(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	e := setup(t, filepath.Join(t.TempDir(), "sbx.db"), data, 0)
	old := time.Now().Add(-PruneAge - time.Hour)
	mk := func(path string, age time.Time) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(path, "diff"), 0o755); err != nil {
			t.Fatal(err)
		}
		m := filepath.Join(path, "complete")
		if err := os.WriteFile(m, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(m, age, age); err != nil {
			t.Fatal(err)
		}
		return path
	}
	layers := filepath.Join(data, "layers")
	usedOld := mk(filepath.Join(layers, "used"), old)
	liveOld := mk(filepath.Join(layers, "live"), old)
	supersededOld := mk(filepath.Join(layers, "superseded"), old)
	taggedOld := mk(filepath.Join(layers, "tagged"), old)
	idleOld := mk(filepath.Join(layers, "idle"), old)
	fresh := mk(filepath.Join(layers, "fresh"), time.Now())
	oldUpload := mk(filepath.Join(data, "uploads", "team", "u1"), old)
	// A ready build referencing usedOld.
	rec := Record{ID: "t1", TeamID: "team", Names: []string{"t1"}, CPUCount: 1, MemoryMB: 256, DiskMB: 1024,
		CreatedAt: time.Now(), UpdatedAt: time.Now()}
	if err := e.svc.store.CreateTemplate(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	for id, layer := range map[string]string{"b1": usedOld, "b2": liveOld, "b3": supersededOld, "b4": taggedOld} {
		b := BuildRecord{ID: id, TemplateID: "t1", Status: StatusReady, CreatedAt: time.Now()}
		if err := e.svc.store.CreateBuild(t.Context(), b); err != nil {
			t.Fatal(err)
		}
		b.Result = BuildResult{Layers: []string{filepath.Join(layer, "diff"), data}}
		if err := e.svc.store.UpdateBuild(t.Context(), b); err != nil {
			t.Fatal(err)
		}
	}
	rec.CurrentBuild = "b1"
	if err := e.svc.store.UpdateTemplate(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	// Build b4 is tagged: name:v1 must keep starting from it.
	if err := e.svc.store.SetTemplateTags(t.Context(), "t1", "b4", []string{"v1"}, old); err != nil {
		t.Fatal(err)
	}
	// A paused sandbox still uses build b2; nothing uses b3 any more.
	e.svc.SetLiveSandboxes(liveList{{ID: "sb1", BuildID: "b2", State: store.StatePaused}})
	n, err := e.svc.Prune(t.Context(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{usedOld: true, liveOld: true, taggedOld: true, supersededOld: false, idleOld: false, fresh: true, oldUpload: false} {
		_, err := os.Stat(p)
		if got := err == nil; got != want {
			t.Errorf("%s exists=%v, want %v", p, got, want)
		}
	}
	if n != 3 {
		t.Errorf("removed %d, want 3", n)
	}
}

type liveList []store.Sandbox

func (l liveList) LiveSandboxes(context.Context) ([]store.Sandbox, error) { return l, nil }
