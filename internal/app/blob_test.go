package app

import (
	"strings"
	"testing"
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
	if want := "file://" + dir + "/blobs"; cfg.Blob.URL != want || cfg.Blob.CacheMB != DefaultBlobCacheMB {
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
	}
	for _, tt := range bad {
		c := Config{Listen: DefaultListen, DataDir: dir, Runtime: DefaultRuntime, AgentDir: dir, Blob: tt.blob}
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: err = %v, want one containing %q", tt.blob, err, tt.want)
		}
	}
}
