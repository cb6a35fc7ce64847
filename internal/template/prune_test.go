package template

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/blob/layer"
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

// TestPruneLayerBlobs: layers pulled from the blob store go once no stack
// in use references them and they were not pulled or handed out for
// PruneAge; a live sandbox's (or snapshot's) build keeps its layers even
// when the template moved on.
func TestPruneLayerBlobs(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	dbPath := filepath.Join(t.TempDir(), "sbx.db")
	st, err := blob.NewFileStore(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e := setup(t, dbPath, data, 0, withBlobs(t, dbPath, st))
	ctx := t.Context()
	old := time.Now().Add(-PruneAge - time.Hour)
	digest := func(s string) blob.Digest { return blob.FromBytes([]byte(s)) }
	pulled := func(name string, at time.Time) string {
		t.Helper()
		dir := filepath.Join(PulledLayersDir(data), digest(name).Hex())
		if err := os.MkdirAll(filepath.Join(dir, "diff"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(dir, at, at); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	current, snapshot, replaced, fresh := pulled("current", old), pulled("snapshot", old), pulled("replaced", old), pulled("fresh", time.Now())
	handedOut := pulled("handed out", old)
	layer.MarkUsed(filepath.Join(handedOut, "diff")) // a create took it just now
	rec := Record{ID: "t1", TeamID: "team", Names: []string{"t1"}, CPUCount: 1, MemoryMB: 256, DiskMB: 1024,
		CreatedAt: old, UpdatedAt: old}
	if err := e.svc.store.CreateTemplate(ctx, rec); err != nil {
		t.Fatal(err)
	}
	for id, l := range map[string]string{"b-current": "current", "b-snap": "snapshot", "b-replaced": "replaced", "b-handed": "handed out"} {
		b := BuildRecord{ID: id, TemplateID: "t1", Status: StatusReady, CreatedAt: old, FinishedAt: old}
		if err := e.svc.store.CreateBuild(ctx, b); err != nil {
			t.Fatal(err)
		}
		if err := e.svc.store.UpdateBuild(ctx, b); err != nil {
			t.Fatal(err)
		}
		if err := e.svc.blobs.Layers.SetLayers(ctx, store.LayerOwnerBuild, id, []store.LayerRef{{Digest: string(digest(l))}}, old); err != nil {
			t.Fatal(err)
		}
	}
	rec.CurrentBuild = "b-current"
	if err := e.svc.store.UpdateTemplate(ctx, rec); err != nil {
		t.Fatal(err)
	}
	e.svc.SetLiveSandboxes(liveList{{BuildID: "b-snap"}}) // a sandbox snapshot's build, no row
	if _, err := e.svc.Prune(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{current: true, snapshot: true, replaced: false, fresh: true, handedOut: true} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s exists=%v, want %v", filepath.Base(p), err == nil, want)
		}
	}
}
