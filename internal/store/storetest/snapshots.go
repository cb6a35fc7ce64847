package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
)

// SnapshotsStore is what the snapshots suite needs.
type SnapshotsStore interface {
	store.Snapshots
	store.Layers
}

// RunSnapshots runs the sandbox snapshots' conformance suite.
func RunSnapshots(t *testing.T, newStore func(t *testing.T) SnapshotsStore) {
	t.Run("PutReadList", func(t *testing.T) { testSnapshotsPut(t, newStore(t)) })
	t.Run("NamesAndDelete", func(t *testing.T) { testSnapshotNames(t, newStore(t)) })
}

func sampleSnapshot(id, team, name string, at time.Time) store.Snapshot {
	return store.Snapshot{ID: id, TeamID: team, Name: name, SandboxID: "sbx-src", BaseTemplate: "base", BuildID: "build-1",
		Template: []byte(`{"startCmd":"sleep 1"}`), SizeBytes: 4096, CreatedAt: at,
		Layers: []store.LayerRef{{Digest: "sha256:" + hex64('a'), Size: 30, Path: "/d/sandbox-snapshots/" + id + "/layer-0"},
			{Digest: "sha256:" + hex64('b'), Size: 40, Path: "/d/sandbox-snapshots/" + id + "/base-1"}}}
}

func testSnapshotsPut(t *testing.T, s SnapshotsStore) {
	ctx := t.Context()
	if _, err := s.Snapshot(ctx, "snap-1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Snapshot of none = %v, want not found", err)
	}
	a := sampleSnapshot("snap-1", "team-a", "", nodeBase)
	b := sampleSnapshot("snap-2", "team-a", "named", nodeBase.Add(time.Second))
	b.MemoryNode = "node-a"
	c := sampleSnapshot("snap-3", "team-b", "", nodeBase.Add(2*time.Second))
	for _, sn := range []store.Snapshot{a, b, c} {
		if err := s.PutSnapshot(ctx, sn); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Snapshot(ctx, "snap-2")
	if err != nil {
		t.Fatal(err)
	}
	if got.TeamID != "team-a" || got.Name != "named" || got.MemoryNode != "node-a" || got.BaseTemplate != "base" ||
		got.BuildID != "build-1" || string(got.Template) != string(b.Template) || got.SizeBytes != 4096 ||
		!got.CreatedAt.Equal(b.CreatedAt) || !slices.Equal(got.Layers, b.Layers) {
		t.Fatalf("Snapshot = %+v, want %+v", got, b)
	}
	// The layers are a stack like the others (what a GC of the store keeps).
	if refs, err := s.Layers(ctx, store.LayerOwnerSnapshot, "snap-2"); err != nil || !slices.Equal(refs, b.Layers) {
		t.Fatalf("Layers(snapshot) = %+v, %v", refs, err)
	}
	list, err := s.ListSnapshots(ctx, "team-a")
	if err != nil || len(list) != 2 || list[0].ID != "snap-2" || list[1].ID != "snap-1" {
		t.Fatalf("ListSnapshots(team-a) = %+v, %v; want snap-2, snap-1 (newest first)", list, err)
	}
	if all, err := s.ListSnapshots(ctx, ""); err != nil || len(all) != 3 || all[0].ID != "snap-3" {
		t.Fatalf("ListSnapshots(all) = %+v, %v", all, err)
	}
	// New content under the same ID replaces the row and its layers.
	b2 := b
	b2.Layers, b2.SizeBytes, b2.MemoryNode = b.Layers[:1], 99, ""
	if err := s.PutSnapshot(ctx, b2); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Snapshot(ctx, "snap-2"); got.SizeBytes != 99 || got.MemoryNode != "" || len(got.Layers) != 1 {
		t.Fatalf("after replace: %+v", got)
	}
	if list, _ := s.ListSnapshots(ctx, "team-a"); len(list) != 2 {
		t.Fatalf("replace added a row: %+v", list)
	}
}

func testSnapshotNames(t *testing.T, s SnapshotsStore) {
	ctx := t.Context()
	if err := s.PutSnapshot(ctx, sampleSnapshot("snap-1", "team-a", "shared", nodeBase)); err != nil {
		t.Fatal(err)
	}
	// Two unnamed snapshots do not collide on the empty name.
	for _, id := range []string{"snap-2", "snap-3"} {
		if err := s.PutSnapshot(ctx, sampleSnapshot(id, "team-a", "", nodeBase)); err != nil {
			t.Fatal(err)
		}
	}
	// A name is one namespace across teams (as template names are).
	if err := s.PutSnapshot(ctx, sampleSnapshot("snap-4", "team-b", "shared", nodeBase)); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("a second snapshot named shared: %v, want already exists", err)
	}
	if _, err := s.Snapshot(ctx, "snap-4"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("the refused snapshot was recorded: %v", err)
	}
	got, err := s.SnapshotByName(ctx, "shared")
	if err != nil || got.ID != "snap-1" || len(got.Layers) != 2 {
		t.Fatalf("SnapshotByName = %+v, %v", got, err)
	}
	if _, err := s.SnapshotByName(ctx, ""); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("SnapshotByName(\"\") = %v, want not found", err)
	}
	// Another team cannot delete it.
	if err := s.DeleteSnapshot(ctx, "team-b", "snap-1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("DeleteSnapshot by another team = %v, want not found", err)
	}
	if err := s.DeleteSnapshot(ctx, "team-a", "snap-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Snapshot(ctx, "snap-1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Snapshot after delete = %v", err)
	}
	if refs, _ := s.Layers(ctx, store.LayerOwnerSnapshot, "snap-1"); len(refs) != 0 {
		t.Fatalf("layers left after delete: %+v", refs)
	}
	// The name is free again.
	if err := s.PutSnapshot(ctx, sampleSnapshot("snap-4", "team-b", "shared", nodeBase)); err != nil {
		t.Fatal(err)
	}
}
