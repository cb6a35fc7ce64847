package app

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/blob/blobgc"
	"github.com/sbxdev/sbx/internal/store"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
)

// --blob-store defaults to a directory in the data dir; malformed URLs,
// credentials in the URL and half-given S3 credentials are refused at
// start-up with a message naming the flag.
func TestBlobStoreConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Listen: DefaultListen, DataDir: dir, Runtime: DefaultRuntime, AgentDir: t.TempDir()}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if want := "file://" + dir + "/blobs"; cfg.Blob.URL != want || cfg.Blob.CacheMB != DefaultBlobCacheMB || cfg.Blob.GCGrace != blobgc.DefaultGrace {
		t.Fatalf("blob config = %+v, want URL %s and the default cache size", cfg.Blob, want)
	}
	bad := []struct {
		blob BlobConfig
		want string
	}{
		{BlobConfig{URL: "file://relative/dir"}, "ABSOLUTE"},
		{BlobConfig{URL: "gs://bucket"}, "unknown scheme"},
		{BlobConfig{URL: "s3://key:secret@bucket"}, "must not carry credentials"},
		{BlobConfig{URL: "s3://"}, "name the bucket"},
		{BlobConfig{URL: "s3://b", S3AccessKey: "k"}, "go together"},
		{BlobConfig{URL: "file:///x", S3AccessKey: "k", S3SecretKeyFile: "/f"}, "need an s3://"},
		{BlobConfig{CacheMB: -1}, "--blob-cache-size"},
		{BlobConfig{GCGrace: time.Minute}, "--blob-gc-grace"},
	}
	for _, tt := range bad {
		c := Config{Listen: DefaultListen, DataDir: dir, Runtime: DefaultRuntime, AgentDir: dir, Blob: tt.blob}
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: err = %v, want one containing %q", tt.blob, err, tt.want)
		}
	}
}

// TestBlobKeepSources: the collection keeps what the layers table (every
// owner: builds, paused sandboxes, their lifecycle blobs) and the uploads
// table reference, read from a real database.
func TestBlobKeepSources(t *testing.T) {
	st, err := sqlstore.Open(t.Context(), filepath.Join(t.TempDir(), "sbx.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := t.Context()
	d := func(s string) string { return string(blob.FromBytes([]byte(s))) }
	now := time.Now()
	if err := st.CreateBuild(ctx, store.BuildRecord{ID: "b1", TemplateID: "t", Status: "building", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetLayers(ctx, store.LayerOwnerBuild, "b0", []store.LayerRef{{Digest: d("a deleted template's build")}}, now); err != nil {
		t.Fatal(err)
	}
	if err := st.SetLayers(ctx, store.LayerOwnerBuild, "b1", []store.LayerRef{{Digest: d("build")}, {Path: "/builtin"}}, now); err != nil {
		t.Fatal(err)
	}
	if err := st.SetLayers(ctx, store.LayerOwnerSandbox, "sb1", []store.LayerRef{{Digest: d("paused")}}, now); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutUpload(ctx, store.Upload{TeamID: "t1", FilesHash: strings.Repeat("a", 64), BlobDigest: d("upload"),
		ContentDigest: d("content"), CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, src := range blobKeepSources(st) {
		ds, err := src.Digests(ctx)
		if err != nil {
			t.Fatalf("%s: %v", src.Name, err)
		}
		for _, x := range ds {
			got[x] = true
		}
	}
	for _, want := range []string{"build", "paused", "upload"} {
		if !got[d(want)] {
			t.Errorf("the %s blob is not kept (kept %v)", want, got)
		}
	}
	if got[d("a deleted template's build")] {
		t.Error("the layers of a build no template, tag or sandbox uses are kept")
	}
}
