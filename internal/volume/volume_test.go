package volume_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store/sqldb"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
	"github.com/sbxdev/sbx/internal/testenv"
	"github.com/sbxdev/sbx/internal/volume"
)

// A volume's size is its cap: a write past it fails with "full" (not the
// host's disk), and what fits is kept.
func TestVolumeSizeIsItsCap(t *testing.T) {
	testenv.Require(t, testenv.Root)
	dir := t.TempDir()
	db, err := sqldb.Open(t.Context(), filepath.Join(dir, "sbx.db"), sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() }) // after the volume's removal below
	svc, err := volume.New(volume.Config{Dir: filepath.Join(dir, "volumes"), SizeMB: 8}, sqlstore.NewVolumes(db), slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	v, err := svc.Create(t.Context(), "team", "small")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Delete(context.Background(), "team", v.ID) })
	mux := http.NewServeMux()
	volume.NewContentHandler(svc, slog.Default()).Register(mux)
	put := func(path string, size int) int {
		req := httptest.NewRequest("PUT", "/volumecontent/"+v.ID+"/file?path="+path, bytes.NewReader(make([]byte, size)))
		req.Header.Set("Authorization", "Bearer "+v.Token)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		return rec.Code
	}
	if code := put("/small", 1<<20); code != 200 {
		t.Fatalf("1 MiB into an 8 MiB volume: %d", code)
	}
	if code := put("/big", 16<<20); code != http.StatusTooManyRequests {
		t.Errorf("16 MiB into an 8 MiB volume answered %d, want 429 (full)", code)
	}
	fi, err := os.Stat(filepath.Join(dir, "volumes", v.ID+".img"))
	if err != nil || fi.Size() != 8<<20 {
		t.Errorf("image: %v, %v", fi, err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "volumes", "mnt", v.ID))
	for _, e := range entries {
		if e.Name() == "lost+found" {
			t.Error("a new volume shows lost+found")
		}
	}
}

// A node serves only the volumes whose images it holds: another node's
// volume is refused for mounts, content and deletes (before any mount is
// tried), and left alone when the team goes; a single box's volume
// (no node) is its own.
func TestNodeRefusesAnotherNodesVolume(t *testing.T) {
	dir := t.TempDir()
	db, err := sqldb.Open(t.Context(), filepath.Join(dir, "sbx.db"), sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	repo := sqlstore.NewVolumes(db)
	svc, err := volume.New(volume.Config{Dir: filepath.Join(dir, "volumes"), Node: "node-a"}, repo, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	other := volume.Volume{ID: "vol_b", TeamID: "team", Name: "elsewhere", Token: "vtk_b", SizeMB: 8, NodeID: "node-b"}
	if err := repo.Insert(t.Context(), other); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.MountSource(t.Context(), "team", "elsewhere"); !errors.Is(err, errdefs.ErrFailedPrecondition) ||
		!strings.Contains(err.Error(), "node-b") {
		t.Errorf("MountSource of node-b's volume on node-a = %v; want refused naming node-b", err)
	}
	if _, err := svc.Authorize(t.Context(), other.ID, other.Token); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Authorize of node-b's volume on node-a = %v; want refused", err)
	}
	if err := svc.Delete(t.Context(), "team", other.ID); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Delete of node-b's volume on node-a = %v; want refused", err)
	}
	if err := svc.DeleteTeam(t.Context(), "team"); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.ByID(t.Context(), other.ID); err != nil {
		t.Errorf("node-a's DeleteTeam removed node-b's volume row: %v", err)
	}
}
