package blobgc_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/blob/blobgc"
	"github.com/sbxdev/sbx/internal/blob/blobtest"
)

// TestCollect runs the same cases on a directory and on a real S3 server
// (SeaweedFS). The clock is moved forward, not the blobs' times back (S3
// sets LastModified itself): "later" is now + 2 h, past the 1 h grace.
func TestCollect(t *testing.T) {
	stores := map[string]func(t *testing.T) blob.Store{
		"file": func(t *testing.T) blob.Store {
			s, err := blob.NewFileStore(filepath.Join(t.TempDir(), "blobs"))
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"s3": func(t *testing.T) blob.Store {
			srv := blobtest.StartWeed(t)
			s, err := blob.NewS3Store(t.Context(), blob.S3Config{Bucket: srv.Bucket(t), Endpoint: srv.Endpoint, Region: srv.Region,
				AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, SpoolDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			defer st.Close()
			ctx := t.Context()
			build := blobtest.MustPut(t, st, blobtest.Random(t, 3000))
			paused := blobtest.MustPut(t, st, blobtest.Random(t, 2000))
			upload := blobtest.MustPut(t, st, blobtest.Random(t, 1000))
			orphan := blobtest.MustPut(t, st, blobtest.Random(t, 500))
			sources := []blobgc.Source{
				{Name: "layers", Digests: func(context.Context) ([]string, error) {
					return []string{string(build), string(paused), "", "not a digest"}, nil
				}},
				{Name: "uploads", Digests: func(context.Context) ([]string, error) { return []string{string(upload)}, nil }},
			}
			later := func() time.Time { return time.Now().Add(2 * time.Hour) }
			collect := func(now func() time.Time, sources []blobgc.Source) (blobgc.Result, error) {
				c := blobgc.New(st, sources, blobgc.Config{Grace: time.Hour, Now: now}, slog.New(slog.DiscardHandler))
				return c.Collect(ctx)
			}

			// Young: nothing goes, referenced or not.
			res, err := collect(nil, nil)
			if err != nil || res.Deleted != 0 || res.Young != 4 || res.Listed != 4 {
				t.Fatalf("collection within the grace = %+v, %v; want 4 young, none deleted", res, err)
			}
			// A source that fails: nothing goes.
			failing := append(sources, blobgc.Source{Name: "snapshots", Digests: func(context.Context) ([]string, error) {
				return nil, errors.New("database down")
			}})
			if res, err := collect(later, failing); err == nil || res.Deleted != 0 {
				t.Fatalf("collection with a failing source = %+v, %v; want an error and nothing deleted", res, err)
			}
			for _, d := range []blob.Digest{build, paused, upload, orphan} {
				if ok, _ := st.Exists(ctx, d); !ok {
					t.Fatalf("%s deleted by a collection that failed", d)
				}
			}
			// Old: only the unreferenced one goes.
			res, err = collect(later, sources)
			if err != nil || res.Deleted != 1 || res.DeletedBytes != 500 || res.Referenced != 3 {
				t.Fatalf("collection past the grace = %+v, %v; want the orphan (500 bytes) deleted, 3 referenced", res, err)
			}
			if ok, _ := st.Exists(ctx, orphan); ok {
				t.Fatal("the unreferenced blob is still there")
			}
			for _, d := range []blob.Digest{build, paused, upload} {
				if ok, _ := st.Exists(ctx, d); !ok {
					t.Fatalf("referenced blob %s deleted", d)
				}
			}
		})
	}
}

// TestCollectSparesTouched: a writer reuses an old unreferenced blob (a
// build FROM a template whose own build was just deleted) and touches it
// after the collector listed the store but before the collector read the
// references; the collector must not delete it under the writer. Also:
// leftovers of a Put that died mid-write go after the grace.
func TestCollectSparesTouched(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "blobs")
	st, err := blob.NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := t.Context()
	old := time.Now().Add(-3 * time.Hour)
	reused := blobtest.MustPut(t, st, []byte("a base layer"))
	gone := blobtest.MustPut(t, st, []byte("a deleted build's layer"))
	for _, d := range []blob.Digest{reused, gone} {
		if err := os.Chtimes(filepath.Join(dir, "sha256", d.Hex()[:2], d.Hex()), old, old); err != nil {
			t.Fatal(err)
		}
	}
	stale, fresh := filepath.Join(dir, "tmp", "put-dead"), filepath.Join(dir, "tmp", "put-writing")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	writer := blobgc.Source{Name: "layers", Digests: func(ctx context.Context) ([]string, error) {
		// The writer's touch lands now; its reference row after this read.
		return nil, st.Touch(ctx, reused)
	}}
	c := blobgc.New(st, []blobgc.Source{writer}, blobgc.Config{Grace: time.Hour}, slog.New(slog.DiscardHandler))
	res, err := c.Collect(ctx)
	if err != nil || res.Deleted != 1 || res.TmpRemoved != 1 {
		t.Fatalf("Collect = %+v, %v; want one blob deleted and one leftover removed", res, err)
	}
	if ok, _ := st.Exists(ctx, reused); !ok {
		t.Fatal("the blob touched during the collection was deleted")
	}
	if ok, _ := st.Exists(ctx, gone); ok {
		t.Fatal("the unreferenced old blob is still there")
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("a dead Put's tmp file is still there: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("a Put in progress lost its tmp file: %v", err)
	}
	if s := c.Stats(); s.Deleted != 1 || s.DeletedBytes != int64(len("a deleted build's layer")) {
		t.Errorf("Stats = %+v", s)
	}
}

// touchAfterStat is a FileStore where a writer reuses a blob (touches it,
// then records its reference) right after the collector looked at it
// again: the last instant before the delete.
type touchAfterStat struct {
	*blob.FileStore
	target blob.Digest
}

func (s touchAfterStat) Stat(ctx context.Context, d blob.Digest) (blob.Info, error) {
	info, err := s.FileStore.Stat(ctx, d)
	if err == nil && d == s.target {
		if terr := s.FileStore.Touch(ctx, d); terr != nil {
			return info, terr
		}
	}
	return info, err
}

// The attack on the collector: a writer's touch lands between the
// collector's last look at an old unreferenced blob and its delete. The
// writer was told the blob is kept (Touch succeeded) and records a
// reference to it; the blob must still be there.
func TestCollectSparesTouchBeforeDelete(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "blobs")
	fs, err := blob.NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	ctx := t.Context()
	reused := blobtest.MustPut(t, fs, []byte("a base layer a new build reuses"))
	old := time.Now().Add(-3 * time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "sha256", reused.Hex()[:2], reused.Hex()), old, old); err != nil {
		t.Fatal(err)
	}
	none := blobgc.Source{Name: "layers", Digests: func(context.Context) ([]string, error) { return nil, nil }}
	c := blobgc.New(touchAfterStat{fs, reused}, []blobgc.Source{none}, blobgc.Config{Grace: time.Hour}, slog.New(slog.DiscardHandler))
	res, err := c.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := fs.Exists(ctx, reused); !ok {
		t.Fatalf("Collect = %+v: the blob touched just before its delete was deleted under the writer", res)
	}
	if res.Deleted != 0 || res.Young != 1 {
		t.Errorf("Collect = %+v; want it counted young, nothing deleted", res)
	}
	if names, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(names) != 0 {
		t.Errorf("tmp/ holds %d entries after the collection; want none", len(names))
	}
}
