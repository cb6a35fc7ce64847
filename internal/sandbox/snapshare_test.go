package sandbox

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/blob/layer"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/template"
)

// snapshotEnv is a manager (fake runtime and agents, real SQLite and a
// real file blob store) whose snapshots are in the table.
type snapshotEnv struct {
	*lifecycleEnv
	st    store.Snapshots
	blobs blob.Store
	reg   *template.Registry
}

func newSnapshotEnv(t *testing.T) *snapshotEnv {
	t.Helper()
	bs, err := blob.NewFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cache, err := blob.NewCache(t.TempDir(), bs, 1<<30, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	e := &snapshotEnv{blobs: bs, reg: template.NewRegistry(slog.New(slog.DiscardHandler))}
	var layers store.Layers
	e.lifecycleEnv = newLifecycle(t, nil, func(m *Manager) {
		layers = m.store.(store.Layers)
		m.blobs = &layer.Blobs{Store: bs, Puller: &layer.Puller{Cache: cache}, Layers: layers}
	})
	e.st = e.m.store.(store.Snapshots)
	if err := e.m.SetSnapshotRegistry(t.Context(), e.reg, e.st); err != nil {
		t.Fatal(err)
	}
	return e
}

// taken records a filesystem snapshot another node took: one layer with
// file kept.txt, published to the blob store.
func (e *snapshotEnv) taken(t *testing.T, id, team, name string, at time.Time) store.Snapshot {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layer-0")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kept.txt"), []byte(id), 0o644); err != nil {
		t.Fatal(err)
	}
	d, n, err := layer.Publish(t.Context(), e.blobs, dir)
	if err != nil {
		t.Fatal(err)
	}
	r := store.Snapshot{ID: id, TeamID: team, Name: name, SandboxID: "src", BaseTemplate: "base", BuildID: "",
		Template: []byte(`{"templateID":"base","startCmd":"serve"}`), CreatedAt: at.Truncate(time.Millisecond),
		Layers: []store.LayerRef{{Digest: string(d), Size: n, Path: "/elsewhere/sandbox-snapshots/" + id + "/layer-0"}}}
	if err := e.st.PutSnapshot(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	return r
}

func (e *snapshotEnv) copyOf(id string) string {
	return filepath.Join(e.data.SandboxSnapshots(), id)
}

// A snapshot another node took is pulled on first use, for its team only;
// a new content replaces the copy; a delete elsewhere drops it; a memory
// snapshot of another node is refused naming that node.
func TestSnapshotOfAnotherNode(t *testing.T) {
	t.Parallel()
	e := newSnapshotEnv(t)
	ctx := t.Context()
	now := time.Now().UTC()
	e.taken(t, "snap1", "team-a", "shared-snap", now)

	// Another team: nothing pulled, nothing registered.
	if err := e.m.syncSnapshot(ctx, "team-b", "shared-snap:default"); err != nil {
		t.Fatalf("sync for another team: %v", err)
	}
	if _, err := os.Stat(e.copyOf("snap1")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("another team's reference pulled the snapshot: %v", err)
	}
	// Its team: pulled and registered as its private template.
	if err := e.m.syncSnapshot(ctx, "team-a", "shared-snap:default"); err != nil {
		t.Fatalf("sync: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(e.copyOf("snap1"), "layer-0", "kept.txt")); err != nil || string(b) != "snap1" {
		t.Fatalf("pulled layer: %q, %v", b, err)
	}
	tpl, ok := e.reg.Get("shared-snap")
	if !ok || tpl.ID != "snap1" || tpl.TeamID != "team-a" || tpl.Public || tpl.StartCmd != "serve" ||
		!slices.Equal(tpl.Layers, []string{filepath.Join(e.copyOf("snap1"), "layer-0"), "/nonexistent"}) {
		t.Fatalf("registered = %+v, %v; want the pulled layer over the base's", tpl, ok)
	}
	if held := e.m.HeldSnapshots(10); !slices.Equal(held, []string{"snap1"}) {
		t.Fatalf("HeldSnapshots = %v", held)
	}
	// Current: no second pull (the copy's marker stays).
	marker := filepath.Join(e.copyOf("snap1"), "marker")
	_ = os.WriteFile(marker, nil, 0o600)
	if err := e.m.syncSnapshot(ctx, "team-a", "snap1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("a current copy was pulled again: %v", err)
	}
	// New content under the same ID (a named snapshot taken again).
	e.taken(t, "snap1", "team-a", "shared-snap", now.Add(time.Second))
	if err := e.m.syncSnapshot(ctx, "team-a", "shared-snap"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an outdated copy was kept: %v", err)
	}
	// Deleted through another server: the copy goes.
	if err := e.st.DeleteSnapshot(ctx, "team-a", "snap1"); err != nil {
		t.Fatal(err)
	}
	if err := e.m.syncSnapshot(ctx, "team-a", "shared-snap"); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.reg.Get("shared-snap"); ok {
		t.Fatal("a deleted snapshot is still registered")
	}
	if _, err := os.Stat(e.copyOf("snap1")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the copy of a deleted snapshot is left: %v", err)
	}

	// A memory snapshot stays on its node.
	mem := store.Snapshot{ID: "snap2", TeamID: "team-a", BaseTemplate: "base", Template: []byte(`{}`), MemoryNode: "n9", CreatedAt: now}
	if err := e.st.PutSnapshot(ctx, mem); err != nil {
		t.Fatal(err)
	}
	err := e.m.syncSnapshot(ctx, "team-a", "snap2:default")
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), `node "n9"`) {
		t.Fatalf("start of another node's memory snapshot = %v; want a precondition naming n9", err)
	}
	// A template's reference reads no table.
	e.reg.Put(template.Template{ID: "tpl1", TeamID: "team-a"})
	if err := e.m.syncSnapshot(ctx, "team-a", "tpl1"); err != nil {
		t.Fatal(err)
	}
}

// At start-up a copy whose row is gone or newer is dropped; a current one
// is registered again.
func TestSnapshotCopiesAtStart(t *testing.T) {
	t.Parallel()
	e := newSnapshotEnv(t)
	ctx := t.Context()
	now := time.Now().UTC()
	for _, id := range []string{"keep", "gone", "newer"} {
		e.taken(t, id, "team-a", "", now)
		if err := e.m.syncSnapshot(ctx, "team-a", id); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.st.DeleteSnapshot(ctx, "team-a", "gone"); err != nil {
		t.Fatal(err)
	}
	e.taken(t, "newer", "team-a", "", now.Add(time.Second))
	reg := template.NewRegistry(slog.New(slog.DiscardHandler))
	if err := e.m.SetSnapshotRegistry(ctx, reg, e.st); err != nil {
		t.Fatal(err)
	}
	if _, ok := reg.Get("keep"); !ok {
		t.Error("a current copy was not registered at start")
	}
	for _, id := range []string{"gone", "newer"} {
		if _, ok := reg.Get(id); ok {
			t.Errorf("copy %s registered at start", id)
		}
		if _, err := os.Stat(e.copyOf(id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("copy %s left at start: %v", id, err)
		}
	}
}

// The table view an api replica serves: a team's snapshots only, by ID or
// name; another team's delete is not handled.
func TestSnapshotTable(t *testing.T) {
	t.Parallel()
	e := newSnapshotEnv(t)
	ctx := t.Context()
	now := time.Now().UTC()
	e.taken(t, "s1", "team-a", "named", now)
	e.taken(t, "s2", "team-a", "", now.Add(time.Second))
	e.taken(t, "s3", "team-b", "", now)
	tab := SnapshotTable{e.st}
	for _, tt := range []struct {
		team, sandbox, ref string
		want               []string
	}{
		{"team-a", "", "", []string{"s2", "s1"}},
		{"team-a", "", "named:default", []string{"s1"}},
		{"team-a", "", "ns/named", []string{"s1"}},
		{"team-a", "", "s3", nil},
		{"team-a", "other", "", nil},
		{"team-b", "", "", []string{"s3"}},
		{"", "", "", nil},
	} {
		got, err := tab.ListSnapshots(ctx, tt.team, tt.sandbox, tt.ref)
		var ids []string
		for _, s := range got {
			ids = append(ids, s.ID)
		}
		if err != nil || !slices.Equal(ids, tt.want) {
			t.Errorf("ListSnapshots(%q, %q, %q) = %v, %v; want %v", tt.team, tt.sandbox, tt.ref, ids, err, tt.want)
		}
	}
	if handled, err := tab.DeleteSnapshot(ctx, "team-b", "named"); handled || err != nil {
		t.Errorf("another team's delete = %v, %v; want not handled", handled, err)
	}
	if handled, err := tab.DeleteSnapshot(ctx, "team-a", "named:v2"); handled || err != nil {
		t.Errorf("delete with another tag = %v, %v; want not handled (a template's tag)", handled, err)
	}
	if handled, err := tab.DeleteSnapshot(ctx, "team-a", "named:default"); !handled || err != nil {
		t.Errorf("delete = %v, %v", handled, err)
	}
	if err := tab.DeleteTeam(ctx, "team-a"); err != nil {
		t.Fatal(err)
	}
	if got, _ := tab.ListSnapshots(ctx, "team-a", "", ""); len(got) != 0 {
		t.Errorf("after DeleteTeam: %+v", got)
	}
	if got, _ := tab.ListSnapshots(ctx, "team-b", "", ""); len(got) != 1 {
		t.Errorf("DeleteTeam of team-a touched team-b: %+v", got)
	}
}

// The sweep drops copies of deleted and retaken snapshots, and keeps
// current ones and those from before the table that could not be recorded.
func TestSweepSnapshotCopies(t *testing.T) {
	t.Parallel()
	e := newSnapshotEnv(t)
	ctx := t.Context()
	now := time.Now().UTC()
	for _, id := range []string{"keep", "gone", "newer"} {
		e.taken(t, id, "team-a", "", now)
		if err := e.m.syncSnapshot(ctx, "team-a", id); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.st.DeleteSnapshot(ctx, "team-a", "gone"); err != nil {
		t.Fatal(err)
	}
	e.taken(t, "newer", "team-a", "", now.Add(time.Second))
	if err := e.m.sweepSnapshotCopies(ctx); err != nil {
		t.Fatal(err)
	}
	if held := e.m.HeldSnapshots(10); !slices.Equal(held, []string{"keep"}) {
		t.Errorf("held after the sweep: %v; want keep", held)
	}
	for _, id := range []string{"gone", "newer"} {
		if _, err := os.Stat(e.copyOf(id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("copy %s left by the sweep: %v", id, err)
		}
	}
}
