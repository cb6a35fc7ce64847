package blob

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/hostfs"
)

// Cache is a node's local copy of the blobs it uses, fetched from a Store
// on first use:
//
//   - one download per blob however many callers ask for it at once
//     (single flight); a caller whose ctx ends stops waiting, the download
//     goes on for the others;
//   - the content is checked against its digest before it is published
//     (written under a temporary name, synced, renamed), so a file in the
//     cache under a digest is always that digest's content;
//   - the least recently used blobs are evicted when the cache holds more
//     than its bound, never one a caller still holds (Handle.Release).
//
// The cache directory belongs to one process (an flock on DIR/.lock says
// so); its entries survive a restart.
type Cache struct {
	src  Store
	dir  string
	root *hostfs.Dir
	tmp  *hostfs.Dir
	lock *os.File
	max  int64
	log  *slog.Logger

	mu       sync.Mutex
	entries  map[Digest]*entry
	lru      list.List // of *entry, most recent first
	size     int64
	inflight map[Digest]*fetch
	stats    CacheStats
	stall    time.Duration // a download without progress this long fails
}

// DefaultStallTimeout is how long a download may go without receiving a
// byte before it fails: a remote store that hangs must not leave its blob
// unavailable (every later Get waiting on the hung download) until restart.
const DefaultStallTimeout = 2 * time.Minute

// SetStallTimeout changes how long a download may go without progress.
func (c *Cache) SetStallTimeout(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stall = d
}

type entry struct {
	d    Digest
	size int64
	pins int
	elem *list.Element
}

type fetch struct {
	done chan struct{}
	err  error
}

// CacheStats counts what the cache did, for tests and metrics.
type CacheStats struct {
	Hits, Fetches, Evictions int64
	Entries                  int
	Bytes                    int64
}

// NewCache opens (creating it, mode 0700) the cache in dir, a path the
// host controls, holding at most maxBytes of unpinned blobs fetched from
// src. Blobs already in dir are kept, oldest first in line for eviction.
func NewCache(dir string, src Store, maxBytes int64, log *slog.Logger) (*Cache, error) {
	if maxBytes <= 0 {
		return nil, fmt.Errorf("blob cache %s: size bound must be positive (got %d)", dir, maxBytes)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("blob cache %s: %w", dir, err)
	}
	c := &Cache{src: src, dir: dir, max: maxBytes, log: log, entries: map[Digest]*entry{}, inflight: map[Digest]*fetch{},
		stall: DefaultStallTimeout}
	var err error
	if c.root, err = hostfs.OpenDir(dir); err != nil {
		return nil, fmt.Errorf("blob cache %s: %w", dir, err)
	}
	if err := c.open(); err != nil {
		c.Close()
		return nil, fmt.Errorf("blob cache %s: %w", dir, err)
	}
	return c, nil
}

func (c *Cache) open() error {
	lf, err := c.root.OpenFile(".lock", 0o600)
	if err != nil {
		return err
	}
	c.lock = lf
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("in use by another process (%w): give each process its own cache directory", err)
	}
	if c.tmp, err = c.root.MkdirAll("tmp", 0o700); err != nil {
		return err
	}
	// Downloads a previous run left half done are of no use.
	ents, err := c.tmp.ReadDir()
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := c.tmp.Remove(e.Name); err != nil {
			return err
		}
	}
	return c.index()
}

// index registers the blobs a previous run left, least recently fetched
// (oldest mtime) at the back of the line.
func (c *Cache) index() error {
	algo, err := c.root.MkdirAll(algorithm, 0o700)
	if err != nil {
		return err
	}
	defer algo.Close()
	shards, err := algo.ReadDir()
	if err != nil {
		return err
	}
	var found []hostfs.DirEntry
	for _, sh := range shards {
		if !sh.IsDir() || len(sh.Name) != 2 {
			continue
		}
		dir, err := algo.Sub(sh.Name)
		if err != nil {
			return err
		}
		files, err := dir.ReadDir()
		dir.Close()
		if err != nil {
			return err
		}
		for _, f := range files {
			d := Digest(prefix + f.Name)
			if f.Mode&unix.S_IFMT == unix.S_IFREG && d.Validate() == nil && d.Hex()[:2] == sh.Name {
				found = append(found, f)
			}
		}
	}
	slices.SortFunc(found, func(a, b hostfs.DirEntry) int { return b.Mtim.Compare(a.Mtim) })
	for _, f := range found {
		e := &entry{d: Digest(prefix + f.Name), size: f.Size}
		e.elem = c.lru.PushBack(e)
		c.entries[e.d] = e
		c.size += e.size
	}
	c.evictLocked("")
	return nil
}

// Close releases the cache directory (and its lock). Handles must be
// released first.
func (c *Cache) Close() error {
	var errs []error
	for _, d := range []*hostfs.Dir{c.tmp, c.root} {
		if d != nil {
			errs = append(errs, d.Close())
		}
	}
	if c.lock != nil {
		errs = append(errs, c.lock.Close())
	}
	return errors.Join(errs...)
}

// Handle is a caller's hold on a cached blob: the file stays until
// Release, whatever the eviction wants.
type Handle struct {
	c    *Cache
	e    *entry
	once sync.Once
}

// Digest is the blob's digest.
func (h *Handle) Digest() Digest { return h.e.d }

// Size is the blob's size in bytes.
func (h *Handle) Size() int64 { return h.e.size }

// Path is the verified file's path, for tools that take a path (a
// runtime restoring a checkpoint). The cache directory is the host's own;
// the file must not be modified.
func (h *Handle) Path() string {
	return filepath.Join(h.c.dir, filepath.FromSlash(name(h.e.d)))
}

// Open opens the verified file for reading.
func (h *Handle) Open() (*os.File, error) { return h.c.root.Open(name(h.e.d)) }

// Release ends the hold; calling it again does nothing.
func (h *Handle) Release() {
	h.once.Do(func() {
		h.c.mu.Lock()
		defer h.c.mu.Unlock()
		h.e.pins--
		h.c.evictLocked("")
	})
}

// Get returns a hold on the blob, fetching it from the store first if the
// cache does not have it. It fails with ErrNotFound if the store does not
// hold the blob, and with ErrDigestMismatch if what the store returned is
// not the blob.
func (c *Cache) Get(ctx context.Context, d Digest) (*Handle, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	// A blob fetched for us can be evicted before we pin it only when the
	// cache is far too small for what is in use; a few rounds settle it.
	for waited := range 3 {
		c.mu.Lock()
		if e := c.entries[d]; e != nil {
			e.pins++
			c.lru.MoveToFront(e.elem)
			if waited == 0 {
				c.stats.Hits++
			}
			c.mu.Unlock()
			return &Handle{c: c, e: e}, nil
		}
		f := c.inflight[d]
		if f == nil {
			f = &fetch{done: make(chan struct{})}
			c.inflight[d] = f
			c.stats.Fetches++
			// The download outlives the caller that started it: the
			// others waiting for it must not fail because it left.
			go c.fetch(context.WithoutCancel(ctx), d, f, c.stall)
		}
		c.mu.Unlock()
		select {
		case <-f.done:
			if f.err != nil {
				return nil, f.err
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return nil, fmt.Errorf("blob cache: %s was evicted as soon as it was fetched: the cache bound (%d bytes) is too small for the blobs in use", d, c.max)
}

func (c *Cache) fetch(ctx context.Context, d Digest, f *fetch, stall time.Duration) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := newWatchdog(stall, func() {
		cancel(fmt.Errorf("blob cache: downloading %s stalled: nothing received for %s", d, stall))
	})
	size, err := c.download(ctx, d, w)
	w.stop()
	if cause := context.Cause(ctx); err != nil && cause != nil && cause != context.Canceled {
		err = cause
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.inflight, d)
	if err != nil {
		f.err = fmt.Errorf("blob cache: fetch %s: %w", d, err)
		c.log.Warn("blob fetch failed", "blob.digest", d, "err", err)
	} else {
		e := &entry{d: d, size: size}
		e.elem = c.lru.PushFront(e)
		c.entries[d] = e
		c.size += size
		c.evictLocked(d)
		if size > c.max {
			c.log.Warn("blob larger than the whole cache bound", "blob.digest", d, "bytes", size, "bound", c.max)
		}
	}
	close(f.done)
}

// download copies the blob from the store into the cache directory,
// checking it against d before it gets its name.
func (c *Cache) download(ctx context.Context, d Digest, w *watchdog) (int64, error) {
	rc, err := c.src.Open(ctx, d)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	// A read blocked on a hung connection may not watch ctx: closing the
	// body is what unblocks it when the watchdog (or anything) cancels.
	defer context.AfterFunc(ctx, func() { rc.Close() })()
	tmpName := randomName()
	out, err := c.tmp.Create(tmpName, 0o600)
	if err != nil {
		return 0, err
	}
	published := false
	defer func() {
		if !published {
			_ = c.tmp.Remove(tmpName)
		}
	}()
	n, err := io.Copy(out, ctxReader{ctx, Verify(rc, d, -1)})
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	dir, err := c.root.MkdirAll(shard(d), 0o700)
	if err != nil {
		return 0, err
	}
	defer dir.Close()
	if err := c.tmp.Rename(tmpName, dir, d.Hex()); err != nil {
		return 0, err
	}
	published = true
	return n, dir.Sync()
}

// evictLocked removes least recently used, unpinned blobs until the cache
// fits its bound; keep (a blob just fetched for waiting callers) stays.
func (c *Cache) evictLocked(keep Digest) {
	for el := c.lru.Back(); el != nil && c.size > c.max; {
		e := el.Value.(*entry)
		prev := el.Prev()
		if e.pins == 0 && e.d != keep {
			if err := c.removeFile(e.d); err != nil {
				// Keep counting it: the bytes are still on disk.
				c.log.Warn("blob cache eviction failed", "blob.digest", e.d, "err", err)
			} else {
				c.lru.Remove(el)
				delete(c.entries, e.d)
				c.size -= e.size
				c.stats.Evictions++
			}
		}
		el = prev
	}
}

func (c *Cache) removeFile(d Digest) error {
	dir, err := c.root.Sub(shard(d))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Remove(d.Hex())
}

// Stats returns the cache's counters.
func (c *Cache) Stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Entries, s.Bytes = len(c.entries), c.size
	return s
}

// watchdog calls fire when kick has not been called for timeout (0 = never).
type watchdog struct {
	timer   *time.Timer
	timeout time.Duration
}

func newWatchdog(timeout time.Duration, fire func()) *watchdog {
	w := &watchdog{timeout: timeout}
	if timeout > 0 {
		w.timer = time.AfterFunc(timeout, fire)
	}
	return w
}

func (w *watchdog) kick() {
	if w.timer != nil {
		w.timer.Reset(w.timeout)
	}
}

func (w *watchdog) stop() {
	if w.timer != nil {
		w.timer.Stop()
	}
}

// progressReader kicks the watchdog for every read that brings bytes.
type progressReader struct {
	r io.Reader
	w *watchdog
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.w.kick()
	}
	return n, err
}
