package volume_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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
	if code := put("/big", 7<<20); code != http.StatusTooManyRequests {
		t.Errorf("7 MiB more into an 8 MiB volume answered %d, want 429 (full)", code)
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

// A write whose body is said to be larger than the volume answers 413
// saying so, before writing; one that fills the volume answers 429 (full).
// Neither leaves any part of the file: the old content stays, no new name
// appears. At the limit the body is read (and the volume, smaller by its
// file system, fills), one byte more is refused as too large; a body of
// unknown length fills the volume first.
func TestWriteOverTheCapLeavesNoPartialFile(t *testing.T) {
	testenv.Require(t, testenv.Root)
	const sizeMB = 8
	dir := t.TempDir()
	db, err := sqldb.Open(t.Context(), filepath.Join(dir, "sbx.db"), sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	svc, err := volume.New(volume.Config{Dir: filepath.Join(dir, "volumes"), SizeMB: sizeMB}, sqlstore.NewVolumes(db), slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	v, err := svc.Create(t.Context(), "team", "capped")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Delete(context.Background(), "team", v.ID) })
	mnt := filepath.Join(dir, "volumes", "mnt", v.ID)
	mux := http.NewServeMux()
	volume.NewContentHandler(svc, slog.Default()).Register(mux)
	put := func(path string, body []byte, chunked bool) (int, string) {
		var r io.Reader = bytes.NewReader(body)
		if chunked {
			r = io.MultiReader(r) // no length known up front
		}
		req := httptest.NewRequest("PUT", "/volumecontent/"+v.ID+"/file?path="+path, r)
		req.Header.Set("Authorization", "Bearer "+v.Token)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	if code, body := put("/keep", []byte("old"), false); code != 200 {
		t.Fatalf("small write: %d %s", code, body)
	}
	for _, tc := range []struct {
		name    string
		size    int
		chunked bool
		want    int
		hint    string
	}{
		{"at the limit", sizeMB << 20, false, http.StatusTooManyRequests, "full"},
		{"one byte over", sizeMB<<20 + 1, false, http.StatusRequestEntityTooLarge, "at most 8 MiB"},
		{"one byte over, no length", sizeMB<<20 + 1, true, http.StatusTooManyRequests, "full"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := put("/keep", make([]byte, tc.size), tc.chunked)
			if code != tc.want || !strings.Contains(body, tc.hint) {
				t.Errorf("PUT of %d bytes: %d %s; want %d mentioning %q", tc.size, code, body, tc.want, tc.hint)
			}
			if b, err := os.ReadFile(filepath.Join(mnt, "keep")); err != nil || string(b) != "old" {
				t.Errorf("after the failed write the file holds %d bytes (%v), want the old 3", len(b), err)
			}
			if ents, _ := os.ReadDir(mnt); len(ents) != 1 {
				var names []string
				for _, e := range ents {
					names = append(names, e.Name())
				}
				t.Errorf("volume holds %q, want only keep", names)
			}
		})
	} // What fits replaces the file, owned and moded as asked.
	if code, body := put("/keep&uid=1234&gid=1234&mode=384", []byte("new"), true); code != 200 {
		t.Fatalf("replacing write: %d %s", code, body)
	}
	fi, err := os.Stat(filepath.Join(mnt, "keep"))
	if b, _ := os.ReadFile(filepath.Join(mnt, "keep")); err != nil || string(b) != "new" || fi.Mode().Perm() != 0o600 ||
		fi.Sys().(*syscall.Stat_t).Uid != 1234 {
		t.Errorf("after a replacing write: %q, %v, %v", b, fi.Mode(), err)
	}
}
