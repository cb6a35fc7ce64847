package layer

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/blob/blobtest"
)

// benchLayer writes a 64 MiB layer of 2,048 files of 32 KiB (random, so
// nothing compresses or dedupes) in 64 directories.
func benchLayer(b *testing.B) (string, int64) {
	b.Helper()
	dir := filepath.Join(b.TempDir(), "layer")
	buf := make([]byte, 32<<10)
	var total int64
	for d := range 64 {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", d))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			b.Fatal(err)
		}
		for f := range 32 {
			_, _ = rand.Read(buf)
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%02d", f)), buf, 0o644); err != nil {
				b.Fatal(err)
			}
			total += int64(len(buf))
		}
	}
	return dir, total
}

// BenchmarkPublishPull publishes a 64 MiB layer and pulls it into an
// empty cache, against a directory and against SeaweedFS (S3), reporting
// MB/s of layer content:
//
//	go test ./internal/blob/layer -run '^$' -bench PublishPull -benchtime 5x
func BenchmarkPublishPull(b *testing.B) {
	stores := map[string]func(b *testing.B) blob.Store{
		"file": func(b *testing.B) blob.Store {
			st, err := blob.NewFileStore(filepath.Join(b.TempDir(), "blobs"))
			if err != nil {
				b.Fatal(err)
			}
			return st
		},
		"s3": func(b *testing.B) blob.Store {
			w := blobtest.StartWeed(b)
			st, err := blob.NewS3Store(context.Background(), blob.S3Config{Bucket: w.Bucket(b), Endpoint: w.Endpoint,
				Region: w.Region, AccessKey: w.AccessKey, SecretKey: w.SecretKey, SpoolDir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			return st
		},
	}
	for _, name := range []string{"file", "s3"} {
		b.Run(name, func(b *testing.B) {
			st := stores[name](b)
			defer st.Close()
			dir, size := benchLayer(b)
			ctx := context.Background()
			b.Run("publish", func(b *testing.B) {
				b.SetBytes(size)
				for b.Loop() {
					// A fresh copy each time would measure cp; the store
					// dedupes by digest but Publish still packs and hashes.
					if _, _, err := Publish(ctx, st, dir); err != nil {
						b.Fatal(err)
					}
				}
			})
			d, _, err := Publish(ctx, st, dir)
			if err != nil {
				b.Fatal(err)
			}
			b.Run("pull", func(b *testing.B) {
				b.SetBytes(size)
				for b.Loop() {
					b.StopTimer()
					cache, err := blob.NewCache(filepath.Join(b.TempDir(), "cache"), st, 1<<30, slog.New(slog.DiscardHandler))
					if err != nil {
						b.Fatal(err)
					}
					dst := filepath.Join(b.TempDir(), "l")
					b.StartTimer()
					if err := Pull(ctx, cache, d, dst, "bench"); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					cache.Close()
					_ = os.RemoveAll(dst)
					b.StartTimer()
				}
			})
		})
	}
}
