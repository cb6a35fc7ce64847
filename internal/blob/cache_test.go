package blob_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/blob/blobtest"
)

// origin is a real FileStore that counts Opens, can hold them until a
// gate opens, and can serve wrong bytes: what a slow or corrupt remote
// store does.
type origin struct {
	blob.Store
	opens  atomic.Int64
	gate   chan struct{} // when non-nil, Open waits for it to close
	tamper bool
}

func (o *origin) Open(ctx context.Context, d blob.Digest) (io.ReadCloser, error) {
	o.opens.Add(1)
	if o.gate != nil {
		select {
		case <-o.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	rc, err := o.Store.Open(ctx, d)
	if err != nil || !o.tamper {
		return rc, err
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	b[0] ^= 1
	return io.NopCloser(bytes.NewReader(b)), nil
}

func newOrigin(t *testing.T) *origin {
	t.Helper()
	s, err := blob.NewFileStore(filepath.Join(t.TempDir(), "origin"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &origin{Store: s}
}

func newCache(t *testing.T, dir string, src blob.Store, max int64) *blob.Cache {
	t.Helper()
	c, err := blob.NewCache(dir, src, max, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func get(t *testing.T, c *blob.Cache, d blob.Digest) *blob.Handle {
	t.Helper()
	h, err := c.Get(t.Context(), d)
	if err != nil {
		t.Fatalf("Get %s: %v", d, err)
	}
	return h
}

func cached(dir string, d blob.Digest) bool {
	_, err := os.Lstat(filepath.Join(dir, "sha256", d.Hex()[:2], d.Hex()))
	return err == nil
}

func TestCacheSingleFlight(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	data := blobtest.Random(t, 300_000)
	d := blobtest.MustPut(t, o, data)
	o.gate = make(chan struct{})
	c := newCache(t, t.TempDir(), o, 10<<20)

	const callers = 10
	var wg sync.WaitGroup
	handles := make([]*blob.Handle, callers)
	for i := range callers {
		wg.Go(func() {
			h, err := c.Get(t.Context(), d)
			if err != nil {
				t.Errorf("Get: %v", err)
				return
			}
			handles[i] = h
		})
	}
	// A caller that gives up does not stop the download for the others.
	ctx, cancel := context.WithCancel(t.Context())
	quitter := make(chan error)
	go func() { _, err := c.Get(ctx, d); quitter <- err }()
	cancel()
	if err := <-quitter; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Get = %v", err)
	}
	close(o.gate)
	wg.Wait()
	if n := o.opens.Load(); n != 1 {
		t.Fatalf("%d callers made %d downloads, want 1", callers+1, n)
	}
	for _, h := range handles {
		if h == nil {
			t.Fatal("a caller got no handle")
		}
		f, err := h.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(f)
		f.Close()
		if !bytes.Equal(b, data) || h.Size() != int64(len(data)) || h.Digest() != d {
			t.Fatalf("cached copy differs (%d bytes)", len(b))
		}
		h.Release()
	}
	if b, err := os.ReadFile(handles[0].Path()); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("Path: %v", err)
	}
	if st := c.Stats(); st.Fetches != 1 || st.Hits != 0 || st.Entries != 1 {
		t.Fatalf("stats %+v, want one fetch, one entry", st)
	}
	get(t, c, d).Release()
	if st := c.Stats(); st.Hits != 1 || o.opens.Load() != 1 {
		t.Fatalf("a second use downloaded again: stats %+v", st)
	}
}

func TestCacheVerifiesBeforePublishing(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	d := blobtest.MustPut(t, o, blobtest.Random(t, 5000))
	dir := t.TempDir()
	c := newCache(t, dir, o, 1<<20)

	o.tamper = true
	if _, err := c.Get(t.Context(), d); !errors.Is(err, blob.ErrDigestMismatch) {
		t.Fatalf("Get of tampered content = %v, want ErrDigestMismatch", err)
	}
	if cached(dir, d) {
		t.Fatal("tampered content was published in the cache")
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Fatalf("a failed fetch left %d temporary files", len(ents))
	}
	// The failure is not cached: the next Get fetches again.
	o.tamper = false
	get(t, c, d).Release()
	if !cached(dir, d) || o.opens.Load() != 2 {
		t.Fatalf("after a good fetch: cached %v, %d opens", cached(dir, d), o.opens.Load())
	}

	if _, err := c.Get(t.Context(), blob.FromBytes([]byte("nowhere"))); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Get of a blob the store lacks = %v, want ErrNotFound", err)
	}
	if _, err := c.Get(t.Context(), "sha256:../../etc/passwd"); !errors.Is(err, blob.ErrInvalidDigest) {
		t.Fatalf("Get of a bad digest = %v", err)
	}
}

func TestCacheEvictsLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	var ds []blob.Digest
	for range 5 {
		ds = append(ds, blobtest.MustPut(t, o, blobtest.Random(t, 1000)))
	}
	a, b, c3, d, e := ds[0], ds[1], ds[2], ds[3], ds[4]
	dir := t.TempDir()
	c := newCache(t, dir, o, 3000)

	for _, x := range []blob.Digest{a, b, c3} {
		get(t, c, x).Release()
	}
	get(t, c, a).Release() // a is now the most recent; b the least
	get(t, c, d).Release()
	for x, want := range map[blob.Digest]bool{a: true, b: false, c3: true, d: true} {
		if cached(dir, x) != want {
			t.Fatalf("after filling past the bound: %s cached %v, want %v (b was least recently used)", x, !want, want)
		}
	}
	// A blob someone holds is not evicted, even when least recent.
	held := get(t, c, c3)
	get(t, c, a).Release()
	get(t, c, d).Release()
	get(t, c, e).Release()
	if !cached(dir, c3) {
		t.Fatal("a held blob was evicted")
	}
	if st := c.Stats(); st.Bytes > 3000 || st.Evictions != 2 {
		t.Fatalf("stats %+v: want at most 3000 bytes after 2 evictions", st)
	}
	held.Release()
	held.Release() // idempotent
	get(t, c, b).Release()
	if cached(dir, c3) {
		t.Fatal("released, least recently used blob not evicted")
	}
}

func TestCacheSurvivesRestart(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	d := blobtest.MustPut(t, o, blobtest.Random(t, 1000))
	dir := t.TempDir()
	c, err := blob.NewCache(dir, o, 1<<20, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	get(t, c, d).Release()
	if _, err := blob.NewCache(dir, o, 1<<20, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("a second cache on the same directory = %v, want refused", err)
	}
	c.Close()
	// A download a crash left behind is cleared.
	stale := filepath.Join(dir, "tmp", "put-stale")
	if err := os.WriteFile(stale, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	c2 := newCache(t, dir, o, 1<<20)
	get(t, c2, d).Release()
	if st := c2.Stats(); st.Hits != 1 || st.Fetches != 0 || o.opens.Load() != 1 {
		t.Fatalf("after a restart: stats %+v, %d downloads; want the cached blob reused", st, o.opens.Load())
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale temporary file kept: %v", err)
	}
}

// TestCacheIgnoresPlantedSymlinks: a symlink in a blob's place in the
// cache directory is neither indexed nor served; the fetch replaces it.
func TestCacheIgnoresPlantedSymlinks(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	data := blobtest.Random(t, 1000)
	d := blobtest.MustPut(t, o, data)
	dir := t.TempDir()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	shard := filepath.Join(dir, "sha256", d.Hex()[:2])
	if err := os.MkdirAll(shard, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(shard, d.Hex())); err != nil {
		t.Fatal(err)
	}
	c := newCache(t, dir, o, 1<<20)
	h := get(t, c, d)
	defer h.Release()
	f, err := h.Open()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(b, data) || o.opens.Load() != 1 {
		t.Fatalf("served %q (%d downloads): the planted symlink was trusted", b[:min(len(b), 20)], o.opens.Load())
	}
	if s, _ := os.ReadFile(secret); string(s) != "host secret" {
		t.Fatal("the fetch wrote through the symlink")
	}
}

// hangingOrigin serves a few bytes of a blob, then blocks until its body
// is closed: a remote store whose connection hangs mid-download.
type hangingOrigin struct {
	*origin
	hangs atomic.Int64 // how many Opens still hang
}

type hangingBody struct {
	first  io.Reader
	closed chan struct{}
	once   sync.Once
}

func (h *hangingBody) Read(p []byte) (int, error) {
	if n, _ := h.first.Read(p); n > 0 {
		return n, nil
	}
	<-h.closed
	return 0, errors.New("connection closed")
}

func (h *hangingBody) Close() error { h.once.Do(func() { close(h.closed) }); return nil }

func (o *hangingOrigin) Open(ctx context.Context, d blob.Digest) (io.ReadCloser, error) {
	if o.hangs.Add(-1) < 0 {
		return o.origin.Open(ctx, d)
	}
	return &hangingBody{first: strings.NewReader("partial"), closed: make(chan struct{})}, nil
}

// TestCacheStalledDownloadFails: a download that stops receiving fails
// after the stall timeout, with an error that says so, and the next Get
// downloads again instead of waiting on the hung one forever.
func TestCacheStalledDownloadFails(t *testing.T) {
	o := &hangingOrigin{origin: newOrigin(t)}
	d, _, err := o.Put(t.Context(), strings.NewReader("the whole blob"))
	if err != nil {
		t.Fatal(err)
	}
	o.hangs.Store(1)
	c := newCache(t, t.TempDir(), o, 1<<20)
	c.SetStallTimeout(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, err = c.Get(ctx, d)
	if err == nil || !strings.Contains(err.Error(), "stalled") {
		t.Fatalf("Get of a hung download = %v, want an error saying it stalled", err)
	}
	h, err := c.Get(ctx, d)
	if err != nil {
		t.Fatalf("Get after the stalled download: %v", err)
	}
	defer h.Release()
	b, err := os.ReadFile(h.Path())
	if err != nil || string(b) != "the whole blob" {
		t.Fatalf("cached content = %q, %v", b, err)
	}
}
