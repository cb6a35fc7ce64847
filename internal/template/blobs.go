package template

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/blob/layer"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
)

// SetBlobs makes builds publish their layers and lets this server start
// templates other servers sharing the database built (pulling their layers
// on first use). Call before Load.
func (s *Service) SetBlobs(b *layer.Blobs) {
	s.blobs = b
	s.reg.SetLoader(s.loadFromStore)
}

// PulledLayersDir holds layers pulled from the blob store, one directory
// per digest (<hex>/diff): content-addressed, so builds and sandboxes
// share them.
func PulledLayersDir(dataDir string) string { return filepath.Join(dataDir, "layer-blobs") }

// underDataDir reports whether p is in this server's data dir: a layer the
// server made or pulled itself. Layers elsewhere (the machine's rootfs
// cache of built-in templates) every node prepares for itself.
func (s *Service) underDataDir(p string) bool {
	return strings.HasPrefix(filepath.Clean(p), s.cfg.DataDir+string(filepath.Separator))
}

// publish puts a ready build's layers in the blob store and records their
// digests, so other servers can start the build.
func (s *Service) publish(ctx context.Context, b BuildRecord, logLine func(step, level, msg string)) error {
	if s.blobs == nil {
		return nil
	}
	t0 := s.now()
	refs := make([]store.LayerRef, len(b.Result.Layers))
	var total int64
	for i, dir := range b.Result.Layers {
		refs[i].Path = dir
		if !s.underDataDir(dir) {
			continue // a built-in root filesystem: every node prepares it
		}
		d, n, err := layer.PublishMemo(ctx, s.blobs.Store, dir)
		if err != nil {
			return err
		}
		refs[i].Digest, refs[i].Size = string(d), n
		total += n
	}
	if err := s.blobs.Layers.SetLayers(ctx, store.LayerOwnerBuild, b.ID, refs, s.now().UTC()); err != nil {
		return err
	}
	logLine("finalize", "info", fmt.Sprintf("layers published to the blob store (%d MiB) in %s",
		total>>20, s.now().Sub(t0).Round(time.Millisecond)))
	return nil
}

// errNotLocal: a build's layers must be pulled before it can start.
var errNotLocal = errors.New("layers not on this server yet")

// localLayers returns the paths of a build's layers on this server, pulling
// the ones it lacks from the blob store unless pull is false (then
// errNotLocal). Builds recorded before the blob store (no digests) use
// their paths as they are.
func (s *Service) localLayers(ctx context.Context, rec Record, b BuildRecord, pull bool) ([]string, error) {
	if s.blobs == nil {
		return b.Result.Layers, nil
	}
	refs, err := s.blobs.Layers.Layers(ctx, store.LayerOwnerBuild, b.ID)
	if err != nil {
		return nil, err
	}
	if len(refs) == 0 {
		return b.Result.Layers, nil
	}
	out := make([]string, len(refs))
	what := fmt.Sprintf("template %q build %s", displayName(rec), b.ID)
	for i, ref := range refs {
		if ref.Digest == "" {
			if _, err := os.Stat(ref.Path); err != nil {
				return nil, errdefs.Precondition("%s: its base layer %s is not on this server: it is a built-in template's root filesystem, "+
					"which every server prepares in its --rootfs-cache; start the built-in templates here first (or use the same sbx version on every server)", what, ref.Path)
			}
			out[i] = ref.Path
			continue
		}
		if s.underDataDir(ref.Path) {
			if _, err := os.Stat(ref.Path); err == nil {
				out[i] = ref.Path // built here
				continue
			}
		}
		d, err := blob.ParseDigest(ref.Digest)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		dst := filepath.Join(PulledLayersDir(s.cfg.DataDir), d.Hex(), "diff")
		if _, err := os.Stat(dst); err != nil {
			if !pull {
				return nil, errNotLocal
			}
			if err := s.blobs.Puller.Ensure(ctx, d, dst, what); err != nil {
				return nil, err
			}
			// A build FROM this template publishes the layer by its digest,
			// not by packing the unpacked copy again.
			layer.WriteMemo(dst, d, ref.Size)
		}
		layer.MarkUsed(dst) // pruneLayerBlobs spares what was just handed out
		out[i] = dst
	}
	return out, nil
}

// loadFromStore registers a template the registry does not know: one
// another server sharing the database built (or rebuilt) after this one
// started. Its layers are pulled on this first use.
func (s *Service) loadFromStore(ctx context.Context, teamID, ref string) (Template, bool, error) {
	name, _ := SplitRef(ref)
	if i := strings.LastIndex(name, "/"); i >= 0 {
		name = name[i+1:]
	}
	// One load per template however many creates ask at once: the others
	// find it registered.
	unlock := s.loads.Lock(name)
	defer unlock()
	if t, ok := s.reg.Get(name); ok {
		return t, true, nil
	}
	rec, err := s.store.Template(ctx, name)
	if errors.Is(err, errdefs.ErrNotFound) {
		var ok bool
		if rec, ok = s.findByName(ctx, strings.ToLower(name)); !ok {
			return Template{}, false, nil
		}
	} else if err != nil {
		return Template{}, false, err
	}
	if rec.CurrentBuild == "" || teamID != "" && rec.TeamID != teamID && !rec.Public {
		return Template{}, false, nil
	}
	b, err := s.store.Build(ctx, rec.CurrentBuild)
	if err != nil {
		return Template{}, false, err
	}
	if b.Status != StatusReady {
		return Template{}, false, nil
	}
	t, err := s.templateOf(ctx, rec, b, true)
	if err != nil {
		return Template{}, false, err
	}
	s.reg.Put(t)
	s.log.Info("template registered from the database", "template.id", rec.ID, "build.id", b.ID)
	return t, true, nil
}

// RefreshEvery is how often a server checks for templates other servers
// sharing the database rebuilt.
const RefreshEvery = 5 * time.Second

// refreshLoop forgets registered templates whose current build changed in
// the database (another server rebuilt them): the next create loads the
// new build. Templates being built here are left alone.
func (s *Service) refreshLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(RefreshEvery):
		}
		recs, err := s.store.Templates(ctx)
		if err != nil {
			continue
		}
		for _, r := range recs {
			t, ok := s.reg.Get(r.ID)
			if !ok || t.TeamID == "" || r.CurrentBuild == "" || t.BuildID == r.CurrentBuild {
				continue
			}
			s.mu.Lock()
			_, building := s.running[r.ID]
			s.mu.Unlock()
			if !building && s.reg.Remove(r.ID) {
				s.log.Info("template rebuilt elsewhere; loading its new build on next use", "template.id", r.ID, "build.id", r.CurrentBuild)
			}
		}
	}
}
