package blob_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/blob/blobtest"
	"github.com/sbxdev/sbx/internal/hostfs"
)

func TestFileStoreConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		s, err := blob.NewFileStore(filepath.Join(t.TempDir(), "blobs"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestFileStoreLayout pins the on-disk layout other tools (backups, the
// migration to S3) rely on, and that uploads leave no temporary files.
func TestFileStoreLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "blobs")
	s, err := blob.NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := blobtest.MustPut(t, s, []byte("abc"))
	b, err := os.ReadFile(filepath.Join(dir, "sha256", "ba", d.Hex()))
	if err != nil || string(b) != "abc" {
		t.Fatalf("blob file: %q, %v", b, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Fatalf("tmp/ holds %d entries after Put", len(ents))
	}
	st, _ := os.Stat(dir)
	if st.Mode().Perm() != 0o700 {
		t.Fatalf("store dir mode %v, want 0700", st.Mode().Perm())
	}
}

// TestFileStoreRefusesPlantedSymlinks plants symlinks where blobs and
// shard directories go: reads refuse them, and a Put never writes
// through one.
func TestFileStoreRefusesPlantedSymlinks(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := blob.NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// A symlink in a blob's place.
	d := blob.FromBytes([]byte("planted"))
	shard := filepath.Join(dir, "sha256", d.Hex()[:2])
	if err := os.MkdirAll(shard, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(shard, d.Hex())); err != nil {
		t.Fatal(err)
	}
	if rc, err := s.Open(t.Context(), d); err == nil {
		b, _ := io.ReadAll(rc)
		rc.Close()
		t.Fatalf("Open followed a planted symlink and read %q", b)
	}
	if _, err := s.Stat(t.Context(), d); err == nil {
		t.Fatal("Stat followed a planted symlink")
	}
	// Put replaces the symlink with the real blob and leaves the target alone.
	blobtest.MustPut(t, s, []byte("planted"))
	if b, _ := os.ReadFile(secret); string(b) != "host secret" {
		t.Fatalf("Put wrote through a symlink: target now %q", b)
	}
	if fi, err := os.Lstat(filepath.Join(shard, d.Hex())); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("after Put the blob is %v, %v; want a regular file", fi, err)
	}

	// A symlinked shard directory.
	d2 := blob.FromBytes([]byte("other"))
	if err := os.Symlink(outside, filepath.Join(dir, "sha256", d2.Hex()[:2])); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Put(t.Context(), strings.NewReader("other")); !errors.Is(err, hostfs.ErrSymlink) {
		t.Fatalf("Put through a symlinked shard = %v, want ErrSymlink", err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 1 {
		t.Fatalf("Put wrote into the symlink's target: %d entries there", len(ents))
	}
	if err := s.Delete(t.Context(), d2); err == nil {
		t.Fatal("Delete went through a symlinked shard")
	}
	// Deleting a blob whose name is a symlink removes the link only.
	dd := blob.Digest("sha256:" + d.Hex()[:2] + strings.Repeat("0", 62))
	if err := os.Symlink(secret, filepath.Join(shard, dd.Hex())); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(t.Context(), dd); err != nil {
		t.Fatalf("Delete of a symlink: %v", err)
	}
	if b, _ := os.ReadFile(secret); !bytes.Equal(b, []byte("host secret")) {
		t.Fatal("Delete removed or changed the symlink's target")
	}
	if _, err := os.Lstat(filepath.Join(shard, dd.Hex())); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the symlink is still there: %v", err)
	}
}
