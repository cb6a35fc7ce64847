// Package blobgc deletes the blobs of a shared blob store that nothing
// references any more: layers of deleted or replaced template builds,
// stacks of sandboxes killed after a pause to the store, uploads whose
// rows were pruned.
//
// What to keep is the union of Sources, each listing the digests one kind
// of record references (template builds' and paused sandboxes' layer
// stacks, build uploads, and any later kind, such as sandbox snapshots,
// added as one more Source). A blob is deleted only when no source names
// it and it was stored or touched (blob.Store.Touch) longer ago than the
// grace period: a writer uploads a blob before it records the reference,
// and one reusing a stored blob touches it first, so neither loses its
// blob to a collection that read the references a moment too early.
//
// One process of a cluster collects (the elected leader): every process
// shares the database the sources read, so any one sees every reference.
// A store (bucket and prefix) must not be shared by clusters with
// different databases: each would delete the other's blobs.
package blobgc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/sbxdev/sbx/internal/blob"
)

// Source lists the digests one kind of record references.
type Source struct {
	// Name says which records these are, in logs and errors.
	Name string
	// Digests returns every digest the records reference; strings that
	// are not digests are ignored.
	Digests func(ctx context.Context) ([]string, error)
}

// olderDeleter is a store that deletes a blob only if it was not touched
// since a time, atomically with the look (blob.FileStore): no touch can
// land between the collector's last look and the delete.
type olderDeleter interface {
	DeleteIfOlder(ctx context.Context, d blob.Digest, cutoff time.Time) (bool, error)
}

// tmpPruner is a store that can also remove what crashed writers left
// (blob.FileStore).
type tmpPruner interface {
	PruneTmp(ctx context.Context, before time.Time) (int, error)
}

// Config tunes a Collector; the zero value takes the defaults.
type Config struct {
	// Grace is how long a blob is kept after it was stored or touched,
	// referenced or not. Default DefaultGrace; it must exceed the time
	// between a writer's upload and its recording of the reference (a
	// build's publish, a pause), which is seconds to minutes.
	Grace time.Duration
	// Every is how often Run collects. Default DefaultEvery.
	Every time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Defaults of Config.
const (
	DefaultGrace = time.Hour
	DefaultEvery = 15 * time.Minute
	// MinGrace is the shortest grace accepted: below it a build still
	// publishing could lose a layer it uploaded.
	MinGrace = 10 * time.Minute
)

// Result is what one collection did.
type Result struct {
	Listed       int   // blobs in the store
	Referenced   int   // kept: a source names them
	Young        int   // kept: stored or touched within the grace
	Deleted      int   // deleted
	DeletedBytes int64 // their size
	Failed       int   // deletes that failed (tried again next time)
	TmpRemoved   int   // files crashed Puts left
}

// Collector collects one store.
type Collector struct {
	store   blob.Store
	sources []Source
	grace   time.Duration
	every   time.Duration
	now     func() time.Time
	log     *slog.Logger

	deleted, deletedBytes, runs, failures atomic.Int64
}

// New returns a collector of st keeping what sources reference.
func New(st blob.Store, sources []Source, cfg Config, log *slog.Logger) *Collector {
	c := &Collector{store: st, sources: sources, grace: cfg.Grace, every: cfg.Every, now: cfg.Now, log: log}
	if c.grace <= 0 {
		c.grace = DefaultGrace
	}
	if c.every <= 0 {
		c.every = DefaultEvery
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// Collect deletes the unreferenced blobs older than the grace. It lists
// the store first and reads the references after: a reference recorded
// after the read is to a blob stored or touched after the listing began,
// which the grace keeps. Every candidate is looked at again just before
// its delete, so a touch since the listing saves it too. A source that
// fails aborts the collection before anything is deleted.
func (c *Collector) Collect(ctx context.Context) (Result, error) {
	var res Result
	cutoff := c.now().Add(-c.grace)
	var old []blob.Info
	err := c.store.List(ctx, func(i blob.Info) error {
		res.Listed++
		if i.ModTime.After(cutoff) {
			res.Young++
			return nil
		}
		old = append(old, i)
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("list the blob store: %w", err)
	}
	keep := map[blob.Digest]bool{}
	for _, src := range c.sources {
		ds, err := src.Digests(ctx)
		if err != nil {
			return res, fmt.Errorf("read the blobs %s reference (nothing deleted): %w", src.Name, err)
		}
		for _, d := range ds {
			keep[blob.Digest(d)] = true
		}
	}
	for _, i := range old {
		if keep[i.Digest] {
			res.Referenced++
			continue
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
		cur, err := c.store.Stat(ctx, i.Digest)
		if errors.Is(err, blob.ErrNotFound) {
			continue // another collector, or a retried delete
		}
		if err == nil && cur.ModTime.After(cutoff) {
			res.Young++ // touched since the listing: about to be referenced
			continue
		}
		if od, ok := c.store.(olderDeleter); ok && err == nil {
			var deleted bool
			if deleted, err = od.DeleteIfOlder(ctx, i.Digest, cutoff); err == nil && !deleted {
				res.Young++ // touched at the last moment, or gone
				continue
			}
		} else if err == nil {
			// Another store: a touch landing between this look and the
			// delete is lost (a window of one round trip).
			err = c.store.Delete(ctx, i.Digest)
		}
		if err != nil {
			res.Failed++
			c.log.WarnContext(ctx, "blob gc: delete failed; trying again next time", "blob.digest", i.Digest, "err", err)
			continue
		}
		res.Deleted++
		res.DeletedBytes += i.Size
		c.log.DebugContext(ctx, "blob gc: deleted", "blob.digest", i.Digest, "bytes", i.Size, "stored", i.ModTime)
	}
	if tp, ok := c.store.(tmpPruner); ok {
		n, err := tp.PruneTmp(ctx, cutoff)
		if err != nil {
			c.log.WarnContext(ctx, "blob gc: prune leftovers of crashed writes", "err", err)
		}
		res.TmpRemoved = n
	}
	c.deleted.Add(int64(res.Deleted))
	c.deletedBytes.Add(res.DeletedBytes)
	return res, nil
}

// Stats are the collector's counters since it was made.
type Stats struct {
	Runs, Failures        int64 // collections done, and failed
	Deleted, DeletedBytes int64 // blobs deleted, and their bytes
}

// Stats returns the counters.
func (c *Collector) Stats() Stats {
	return Stats{Runs: c.runs.Load(), Failures: c.failures.Load(), Deleted: c.deleted.Load(), DeletedBytes: c.deletedBytes.Load()}
}

// Run collects now and every Every until ctx ends; it is a leader.Lead
// (the elected process runs it).
func (c *Collector) Run(ctx context.Context) {
	for {
		t0 := c.now()
		res, err := c.Collect(ctx)
		c.runs.Add(1)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			c.failures.Add(1)
			c.log.WarnContext(ctx, "blob gc failed", "err", err)
		default:
			c.log.InfoContext(ctx, "blob gc", "listed", res.Listed, "referenced", res.Referenced, "young", res.Young,
				"deleted", res.Deleted, "deleted_bytes", res.DeletedBytes, "failed", res.Failed, "tmp_removed", res.TmpRemoved,
				"elapsed", c.now().Sub(t0).Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(c.every):
		}
	}
}
