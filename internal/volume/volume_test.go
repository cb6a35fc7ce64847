package volume_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

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
