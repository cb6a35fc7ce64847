package template

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/store"
)

// PruneAge is how long an unreferenced cached layer or upload is kept. It
// exceeds the longest sandbox lifetime (24 h), so no running sandbox can
// still use a layer of a deleted or replaced build when it goes.
const PruneAge = 48 * time.Hour

// LiveSandboxes lists sandboxes not killed (running or paused), whose
// builds' layers must stay (internal/store.Store).
type LiveSandboxes interface {
	LiveSandboxes(ctx context.Context) ([]store.Sandbox, error)
}

// SetLiveSandboxes tells pruning which builds sandboxes still use. Without
// it every successful build's layers are kept.
func (s *Service) SetLiveSandboxes(l LiveSandboxes) { s.live = l }

// Prune removes cached layers that neither a template's current or tagged
// builds nor a live sandbox's build uses and that no build hit for PruneAge, and uploads
// older than PruneAge, local or in the blob store (a build that needs them
// again has the SDK upload them again). It returns how many it removed.
func (s *Service) Prune(ctx context.Context, now time.Time) (int, error) {
	recs, err := s.store.Templates(ctx)
	if err != nil {
		return 0, err
	}
	keep := map[string]bool{} // build IDs
	for _, r := range recs {
		keep[r.CurrentBuild] = true
	}
	// Tagged builds stay startable (name:tag) as long as the tag exists.
	tags, err := s.store.TemplateTags(ctx, "")
	if err != nil {
		return 0, err
	}
	for _, tr := range tags {
		keep[tr.BuildID] = true
	}
	liveBuilds := map[string]bool{} // of live sandboxes and sandbox snapshots
	if s.live != nil {
		sbs, err := s.live.LiveSandboxes(ctx)
		if err != nil {
			return 0, err
		}
		for _, sb := range sbs {
			keep[sb.BuildID] = true
			liveBuilds[sb.BuildID] = true
		}
	}
	builds, err := s.store.ReadyBuilds(ctx)
	if err != nil {
		return 0, err
	}
	used := map[string]bool{}
	for _, b := range builds {
		if !keep[b.ID] && s.live != nil {
			// Unused now; a build finished recently may still be handed out
			// by a create that resolved it just before a rebuild replaced it.
			if now.Sub(b.FinishedAt) > PruneAge && isMountpoint(s.rootfsDir(b.ID)) {
				unmount(s.rootfsDir(b.ID))
			}
			continue
		}
		for _, l := range b.Result.Layers {
			used[filepath.Dir(l)] = true // <layers>/<key>/diff
		}
	}
	removed := 0
	prune := func(dir, marker string, keep func(string) bool) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return
		}
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			if keep(p) || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			fi, err := os.Stat(filepath.Join(p, marker))
			if err == nil && now.Sub(fi.ModTime()) < PruneAge {
				continue
			}
			if err != nil && !strings.Contains(e.Name(), ".tmp-") {
				if fi, err := os.Stat(p); err != nil || now.Sub(fi.ModTime()) < PruneAge {
					continue // an unfinished layer: maybe being written now
				}
			}
			if err := os.RemoveAll(p); err != nil {
				s.log.Warn("prune", "path", p, "err", err)
				continue
			}
			removed++
		}
	}
	prune(filepath.Join(s.cfg.DataDir, "layers"), "complete", func(p string) bool { return used[p] })
	uploadsDir := filepath.Join(s.cfg.DataDir, "uploads")
	if teams, err := os.ReadDir(uploadsDir); err == nil {
		for _, team := range teams {
			if team.IsDir() && !strings.HasPrefix(team.Name(), ".") {
				prune(filepath.Join(uploadsDir, team.Name()), "complete", func(string) bool { return false })
			}
		}
	}
	if s.blobs != nil && s.live != nil {
		s.pruneLayerBlobs(ctx, now, liveBuilds, prune)
	}
	if sh := s.uploads.shared; sh != nil {
		n, err := sh.pruneShared(ctx, s.log, now)
		if err != nil {
			s.log.Warn("prune uploads in the blob store", "err", err)
		}
		removed += n
	}
	if sp, ok := s.snap.(snapshotPruner); ok {
		n, err := sp.PruneSnapshots(keep, now.Add(-PruneAge))
		if err != nil {
			s.log.Warn("prune template snapshots", "err", err)
		}
		removed += n
	}
	return removed, nil
}

// pruneLayerBlobs removes layers pulled from the blob store
// (layer-blobs/<hex>/) that no stack still in use references (a deleted
// template's, a replaced build no sandbox runs, an upload's files) and
// that were not pulled or handed out (layer.MarkUsed) for PruneAge.
//
// liveBuilds are the builds of live sandboxes and of this node's sandbox
// snapshots, whose layers stay even when the database no longer counts the
// build in use (a snapshot is a node-local file, not a row).
func (s *Service) pruneLayerBlobs(ctx context.Context, now time.Time, liveBuilds map[string]bool,
	prune func(dir, marker string, keep func(string) bool)) {
	kept, err := s.blobs.Layers.KeptLayerDigests(ctx, now.Add(-PruneAge))
	if err != nil {
		s.log.Warn("prune layers pulled from the blob store", "err", err)
		return
	}
	for b := range liveBuilds {
		if b == "" {
			continue
		}
		refs, err := s.blobs.Layers.Layers(ctx, store.LayerOwnerBuild, b)
		if err != nil {
			s.log.Warn("prune layers pulled from the blob store", "err", err)
			return
		}
		for _, r := range refs {
			kept = append(kept, r.Digest)
		}
	}
	used := make(map[string]bool, len(kept))
	for _, d := range kept {
		if d, err := blob.ParseDigest(d); err == nil {
			used[d.Hex()] = true
		}
	}
	prune(PulledLayersDir(s.cfg.DataDir), ".", func(p string) bool { return used[filepath.Base(p)] })
}

// snapshotPruner removes snapshots that serve none of the kept builds and
// were not used since before (the sandbox manager).
type snapshotPruner interface {
	PruneSnapshots(keepBuilds map[string]bool, before time.Time) (int, error)
}

// PruneLoop prunes every cfg.PruneEvery until ctx ends.
func (s *Service) PruneLoop(ctx context.Context) {
	for {
		if n, err := s.Prune(ctx, s.now()); err != nil {
			s.log.Warn("prune template layers", "err", err)
		} else if n > 0 {
			s.log.Info("pruned unused template layers and uploads", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.cfg.PruneEvery):
		}
	}
}
