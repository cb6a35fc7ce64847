package app

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/blob/blobgc"
	"github.com/sbxdev/sbx/internal/blob/layer"
	"github.com/sbxdev/sbx/internal/store/sqlstore"
	"github.com/sbxdev/sbx/internal/template"
)

// BlobConfig is the blob store templates' layers and paused sandboxes'
// filesystems are published to, so that servers sharing a database and
// this store can start and resume each other's (docs/cluster-storage.md).
type BlobConfig struct {
	// URL is file:///DIR (one box; default file://<data dir>/blobs) or
	// s3://BUCKET?endpoint=...&region=...&prefix=... (a cluster).
	URL string
	// S3AccessKey and S3SecretKeyFile are the S3 credentials; empty = the
	// environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or
	// MINIO_ACCESS_KEY/MINIO_SECRET_KEY). The secret is read from a file
	// so it never shows in a process list.
	S3AccessKey     string
	S3SecretKeyFile string
	// CacheMB bounds the node-local cache of blobs pulled from the store.
	CacheMB int
	// GCGrace is how long an unreferenced blob is kept after it was
	// stored or last reused before garbage collection deletes it
	// (internal/blob/blobgc); negative turns collection off (a store
	// shared with another database's cluster, whose references this one
	// cannot see).
	GCGrace time.Duration
}

// DefaultBlobCacheMB is the default bound of the local blob cache.
const DefaultBlobCacheMB = 20 << 10

// Validate checks the URL's form (not the store: Open reaches it at
// start-up) and fills the defaults; dataDir is absolute.
func (b *BlobConfig) Validate(dataDir string) error {
	if b.URL == "" {
		b.URL = "file://" + filepath.Join(dataDir, "blobs")
	}
	if b.CacheMB == 0 {
		b.CacheMB = DefaultBlobCacheMB
	}
	if b.GCGrace == 0 {
		b.GCGrace = blobgc.DefaultGrace
	}
	if b.GCGrace > 0 && b.GCGrace < blobgc.MinGrace {
		return fmt.Errorf("--blob-gc-grace %s: at least %s (a build still publishing could lose a layer), or negative to turn collection off",
			b.GCGrace, blobgc.MinGrace)
	}
	if b.CacheMB < 0 {
		return fmt.Errorf("--blob-cache-size %d: want a size in MiB (default %d)", b.CacheMB, DefaultBlobCacheMB)
	}
	u, err := url.Parse(b.URL)
	if err != nil {
		return fmt.Errorf("--blob-store %q: %v; want %s", b.URL, err, blob.URLForms)
	}
	if u.User != nil {
		return fmt.Errorf("--blob-store must not carry credentials (they would show in process lists and logs): " +
			"pass --blob-s3-access-key and --blob-s3-secret-key-file, or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
	}
	switch u.Scheme {
	case "file":
		if (u.Host != "" && u.Host != "localhost") || !filepath.IsAbs(u.Path) || u.RawQuery != "" {
			return fmt.Errorf("--blob-store %q: want file:///ABSOLUTE/DIR (three slashes, no query)", b.URL)
		}
		if b.S3AccessKey != "" || b.S3SecretKeyFile != "" {
			return fmt.Errorf("--blob-s3-access-key and --blob-s3-secret-key-file need an s3:// --blob-store")
		}
	case "s3":
		if u.Host == "" {
			return fmt.Errorf("--blob-store %q: name the bucket, e.g. s3://sbx-blobs?endpoint=http://127.0.0.1:8333", b.URL)
		}
		if (b.S3AccessKey == "") != (b.S3SecretKeyFile == "") {
			return fmt.Errorf("--blob-s3-access-key and --blob-s3-secret-key-file go together (or leave both out to use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)")
		}
	default:
		return fmt.Errorf("--blob-store %q: unknown scheme %q; want %s", b.URL, u.Scheme, blob.URLForms)
	}
	return nil
}

// options reads the secret key file.
func (b BlobConfig) options(dataDir string) (blob.Options, error) {
	opts := blob.Options{S3AccessKey: b.S3AccessKey, SpoolDir: filepath.Join(dataDir, "blob-spool")}
	if b.S3SecretKeyFile != "" {
		raw, err := os.ReadFile(b.S3SecretKeyFile)
		if err != nil {
			return opts, fmt.Errorf("--blob-s3-secret-key-file: %w", err)
		}
		opts.S3SecretKey = strings.TrimSpace(string(raw))
		if opts.S3SecretKey == "" {
			return opts, fmt.Errorf("--blob-s3-secret-key-file %s is empty", b.S3SecretKeyFile)
		}
	}
	return opts, nil
}

// Blobs is the blob store and this node's cache of it.
type Blobs struct {
	Store  blob.Store
	Cache  *blob.Cache
	puller *layer.Puller // one per node: a layer is unpacked once
	// GC collects the store when this process may lead its collection
	// (nil otherwise, or when turned off); its Stats count what it did.
	GC *blobgc.Collector
}

// forSandboxes is the sandbox manager's view of the store: pauses without
// memory publish the sandbox's filesystem and sandboxes other servers
// paused so resume here. It makes the node's one puller, which
// wireTemplates shares.
func (b *Blobs) forSandboxes(data *Data) *layer.Blobs {
	b.puller = &layer.Puller{Cache: b.Cache}
	return &layer.Blobs{Store: b.Store, Puller: b.puller, Layers: data.Store}
}

// wireTemplates makes template builds publish their layers and lets
// templates built by other servers start here.
func (b *Blobs) wireTemplates(svc *template.Service, data *Data) {
	svc.SetBlobs(&layer.Blobs{Store: b.Store, Puller: b.puller, Layers: data.Store})
}

// blobKeepSources lists what the blob store's garbage collection keeps:
// every kind of record that references blobs. A new kind (sandbox
// snapshots in the store) is one more Source here.
func blobKeepSources(st *sqlstore.Store) []blobgc.Source {
	return []blobgc.Source{
		// Builds still in use (current, tagged, run by a sandbox, recent),
		// sandboxes paused to the store and their lifecycle options.
		{Name: "layer stacks", Digests: func(ctx context.Context) ([]string, error) {
			return st.KeptLayerDigests(ctx, time.Now().Add(-template.PruneAge))
		}},
		{Name: "build uploads", Digests: func(ctx context.Context) ([]string, error) {
			us, err := st.UploadsBefore(ctx, time.Now().Add(24*time.Hour), math.MaxInt32)
			if err != nil {
				return nil, err
			}
			ds := make([]string, 0, len(us))
			for _, u := range us {
				ds = append(ds, u.BlobDigest)
			}
			return ds, nil
		}},
	}
}

// startBlobGC runs the blob store's garbage collection in the one process
// el elects (nil: this process is alone on its database, and collects).
func startBlobGC(ctx context.Context, cfg Config, b *Blobs, st *sqlstore.Store, el elector, log *slog.Logger, closers *closerList) {
	if cfg.Blob.GCGrace < 0 {
		log.Info("blob gc off (--blob-gc-grace is negative)")
		return
	}
	col := blobgc.New(b.Store, blobKeepSources(st), blobgc.Config{Grace: cfg.Blob.GCGrace}, log.With("component", "blob-gc"))
	b.GC = col
	runUntilClosed(ctx, closers, "blob gc", log, func(ctx context.Context) error {
		if el == nil {
			col.Run(ctx)
			return nil
		}
		return el.Campaign(ctx, "blob-gc", col.Run)
	})
}

// openBlobs opens the store (reaching an S3 one, so a wrong endpoint,
// bucket or key fails the start, not the first build) and the cache under
// the data dir; both close at shutdown.
func openBlobs(ctx context.Context, cfg Config, log *slog.Logger, closers *closerList) (*Blobs, error) {
	opts, err := cfg.Blob.options(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if opts.SpoolDir != "" {
		if err := os.MkdirAll(opts.SpoolDir, 0o700); err != nil {
			return nil, fmt.Errorf("blob store spool: %w", err)
		}
	}
	st, err := blob.Open(ctx, cfg.Blob.URL, opts)
	if err != nil {
		return nil, fmt.Errorf("--blob-store %s: %w (check the URL, the bucket and the credentials; "+
			"leave --blob-store out for a directory in the data dir)", redactURL(cfg.Blob.URL), err)
	}
	closers.add("blob store", st.Close)
	cache, err := blob.NewCache(filepath.Join(cfg.DataDir, "blob-cache"), st, int64(cfg.Blob.CacheMB)<<20, log)
	if err != nil {
		return nil, err
	}
	closers.add("blob cache", cache.Close)
	log.Info("blob store", "url", redactURL(cfg.Blob.URL), "cache_mb", cfg.Blob.CacheMB)
	return &Blobs{Store: st, Cache: cache}, nil
}

// redactURL drops a query's values other than endpoint and region from
// logs (none are secret today; a future parameter might be).
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	return u.String()
}
