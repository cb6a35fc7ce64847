package blob_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/blob/blobtest"
	"github.com/sbxdev/sbx/internal/errdefs"
)

// TestS3Store runs the conformance suite, the store URL and the cache
// against a real S3 server (SeaweedFS), one server for the whole test.
func TestS3Store(t *testing.T) {
	srv := blobtest.StartWeed(t)
	open := func(t *testing.T, bucket, prefix string) *blob.S3Store {
		t.Helper()
		s, err := blob.NewS3Store(t.Context(), blob.S3Config{
			Bucket: bucket, Endpoint: srv.Endpoint, Region: srv.Region, Prefix: prefix,
			AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, SpoolDir: t.TempDir(),
		})
		if err != nil {
			t.Fatalf("NewS3Store: %v", err)
		}
		return s
	}

	t.Run("Conformance", func(t *testing.T) {
		// One bucket, a fresh key prefix per case: as isolated, and far
		// lighter on the server than a bucket per case.
		bucket := srv.Bucket(t)
		blobtest.Run(t, func(t *testing.T) blob.Store {
			return open(t, bucket, "case-"+blob.FromBytes(blobtest.Random(t, 16)).Hex()[:12])
		})
	})

	t.Run("KeysAreDigestsUnderThePrefix", func(t *testing.T) {
		bucket := srv.Bucket(t)
		s := open(t, bucket, "prod/sbx")
		d := blobtest.MustPut(t, s, []byte("abc"))
		obj, err := srv.Client(t).StatObject(t.Context(), bucket, "prod/sbx/blobs/sha256/"+d.Hex(), minioStat)
		if err != nil || obj.Size != 3 {
			t.Fatalf("object at the expected key: %+v, %v", obj, err)
		}
		// Another prefix in the same bucket is another store.
		if ok, err := open(t, bucket, "other").Exists(t.Context(), d); ok || err != nil {
			t.Fatalf("blob visible under another prefix: %v, %v", ok, err)
		}
	})

	t.Run("OpenByURL", func(t *testing.T) {
		bucket := srv.Bucket(t)
		t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
		t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
		u := fmt.Sprintf("s3://%s?endpoint=%s&region=%s", bucket, url.QueryEscape(srv.Endpoint), srv.Region)
		s, err := blob.Open(t.Context(), u, blob.Options{SpoolDir: t.TempDir()})
		if err != nil {
			t.Fatalf("Open(%s) with credentials from the environment: %v", u, err)
		}
		defer s.Close()
		blobtest.MustPut(t, s, []byte("from the environment"))
	})

	t.Run("Errors", func(t *testing.T) {
		_, err := blob.NewS3Store(t.Context(), blob.S3Config{Bucket: "no-such-bucket-sbx", Endpoint: srv.Endpoint, Region: srv.Region,
			AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
		if !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("missing bucket = %v, want a failed precondition naming it", err)
		}
		bucket := srv.Bucket(t)
		_, err = blob.NewS3Store(t.Context(), blob.S3Config{Bucket: bucket, Endpoint: srv.Endpoint, Region: srv.Region,
			AccessKey: srv.AccessKey, SecretKey: "wrong"})
		if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "check the blob store's credentials") {
			t.Errorf("wrong secret key = %v, want permission denied naming the credentials", err)
		}
	})

	t.Run("CacheFetchesFromS3", func(t *testing.T) {
		s := open(t, srv.Bucket(t), "")
		data := blobtest.Random(t, 3<<20)
		d := blobtest.MustPut(t, s, data)
		c, err := blob.NewCache(t.TempDir(), s, 64<<20, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		h, err := c.Get(t.Context(), d)
		if err != nil {
			t.Fatalf("Get from S3: %v", err)
		}
		defer h.Release()
		if h.Size() != int64(len(data)) || c.Stats().Fetches != 1 {
			t.Fatalf("cached %d bytes, stats %+v", h.Size(), c.Stats())
		}
	})
}

var minioStat = minio.StatObjectOptions{}
