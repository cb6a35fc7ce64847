package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/volume"
)

// RunVolumes runs the team volumes' conformance suite (volume.Repository).
func RunVolumes(t *testing.T, newRepo func(t *testing.T) volume.Repository) {
	t.Run("Rows", func(t *testing.T) { testVolumeRows(t, newRepo(t)) })
	t.Run("Node", func(t *testing.T) { testVolumeNode(t, newRepo(t)) })
}

func testVolumeRows(t *testing.T, r volume.Repository) {
	ctx := t.Context()
	at := time.Unix(1_700_000_000, 123).UTC()
	a := volume.Volume{ID: "vol_a", TeamID: "t1", Name: "data", Token: "vtk_a", SizeMB: 64, CreatedAt: at}
	if err := r.Insert(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := r.Insert(ctx, volume.Volume{ID: "vol_b", TeamID: "t1", Name: "data", Token: "vtk_b", SizeMB: 64, CreatedAt: at}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("a second volume named data in one team = %v; want already exists", err)
	}
	if err := r.Insert(ctx, volume.Volume{ID: "vol_c", TeamID: "t2", Name: "data", Token: "vtk_c", SizeMB: 64, CreatedAt: at}); err != nil {
		t.Fatalf("the same name in another team: %v", err)
	}
	for _, ref := range []string{"vol_a", "data"} {
		if got, err := r.Get(ctx, "t1", ref); err != nil || got != a {
			t.Errorf("Get(t1, %s) = %+v, %v; want %+v", ref, got, err, a)
		}
	}
	if _, err := r.Get(ctx, "t2", "vol_a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("another team's Get by ID = %v; want not found", err)
	}
	if got, err := r.ByID(ctx, "vol_c"); err != nil || got.TeamID != "t2" {
		t.Errorf("ByID(vol_c) = %+v, %v", got, err)
	}
	if list, err := r.List(ctx, "t1"); err != nil || len(list) != 1 || list[0].ID != "vol_a" {
		t.Errorf("List(t1) = %+v, %v; want vol_a only", list, err)
	}
	if err := r.Delete(ctx, "t2", "vol_a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("another team's Delete = %v; want not found", err)
	}
	if err := r.Delete(ctx, "t1", "vol_a"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ByID(ctx, "vol_a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("ByID after Delete = %v; want not found", err)
	}
}

// testVolumeNode: the node that holds a volume's image is kept with it,
// and a single box's volume has none.
func testVolumeNode(t *testing.T, r volume.Repository) {
	ctx := t.Context()
	at := time.Unix(1_700_000_000, 0).UTC()
	for _, v := range []volume.Volume{
		{ID: "vol_n", TeamID: "t1", Name: "on-node", Token: "vtk_n", SizeMB: 8, CreatedAt: at, NodeID: "node-2"},
		{ID: "vol_s", TeamID: "t1", Name: "single", Token: "vtk_s", SizeMB: 8, CreatedAt: at},
	} {
		if err := r.Insert(ctx, v); err != nil {
			t.Fatal(err)
		}
		if got, err := r.ByID(ctx, v.ID); err != nil || got.NodeID != v.NodeID {
			t.Errorf("ByID(%s).NodeID = %q, %v; want %q", v.ID, got.NodeID, err, v.NodeID)
		}
		if got, err := r.Get(ctx, "t1", v.Name); err != nil || got.NodeID != v.NodeID {
			t.Errorf("Get(%s).NodeID = %q, %v; want %q", v.Name, got.NodeID, err, v.NodeID)
		}
	}
	list, err := r.List(ctx, "t1")
	if err != nil || len(list) != 2 || list[0].NodeID != "node-2" || list[1].NodeID != "" {
		t.Errorf("List = %+v, %v; want on-node (node-2), single ('')", list, err)
	}
}
