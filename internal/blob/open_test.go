package blob_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/errdefs"
)

func TestOpenFileURL(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "blobs")
	s, err := blob.Open(t.Context(), "file://"+dir, blob.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.(*blob.FileStore); !ok {
		t.Fatalf("file:// opened a %T", s)
	}
}

// TestOpenRefusesBadURLs checks the errors a mistyped --blob-store gets;
// none of these reaches a server.
func TestOpenRefusesBadURLs(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ url, want string }{
		{"", `unknown scheme ""`},
		{"/var/lib/sbx/blobs", `unknown scheme ""`},
		{"gs://bucket", `unknown scheme "gs"`},
		{"file://relative/dir", "want file:///ABSOLUTE/DIR"},
		{"file:///dir?x=1", "want file:///ABSOLUTE/DIR"},
		{"s3://key:secret@bucket", "must not carry credentials"},
		{"s3://bucket?endpoint=http://h:1&acl=public", `unknown parameter "acl" (known: endpoint, region, prefix)`},
		{"s3://bucket?region=a&region=b", `parameter "region" given 2 times`},
		{"s3://bucket/some/path", "put a key prefix in ?prefix="},
		{"s3://?endpoint=http://127.0.0.1:1", "a bucket is required"},
		{"s3://bucket?endpoint=127.0.0.1:8333", "must be http(s)://HOST[:PORT]"},
		{"s3://bucket?endpoint=http://h:1/path", "must be http(s)://HOST[:PORT]"},
		{"s3://bucket?endpoint=http://h:1&prefix=../x", "prefix"},
		{"s3://bucket?endpoint=http://h:1&prefix=a//b", "prefix"},
	} {
		_, err := blob.Open(t.Context(), tt.url, blob.Options{})
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Open(%q) = %v; want an invalid-argument error containing %q", tt.url, err, tt.want)
		}
	}
}
