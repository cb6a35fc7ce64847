package template

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/archive"
	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/blob/layer"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/store"
)

// SharedUploads keeps the files of COPY steps in the blob store instead
// of the data dir (cluster roles): the replica that receives an upload
// checks and unpacks it as one box does, then publishes the files as a
// layer tar and records its digest by (team, files hash) in the database;
// the node that claims a build pulls them from there.
type SharedUploads struct {
	Store blob.Store
	// Puller unpacks uploads for builds; nil on an api replica, which
	// never builds.
	Puller *layer.Puller
	Repo   store.BuildJobs
	// URLKey signs the upload URLs (a key every replica derives from the
	// cluster secret), so a URL one replica hands out is accepted by every
	// other; nil: a random key of this process.
	URLKey []byte
	// MaxTeamBytes caps the unpacked bytes of the uploads one team holds
	// (they are kept PruneAge); 0: no cap. Without it a team could fill
	// the store every team shares, each small gzip unpacking to the
	// per-step limit.
	MaxTeamBytes int64

	mu sync.Mutex
	// unpacking is the bytes each team's uploads are unpacking here now
	// (reserve), not yet recorded.
	unpacking map[string]int64
}

// TeamUploadsFlag is the sbx serve flag that sets MaxTeamBytes (MiB),
// named in the error a team over it gets.
const TeamUploadsFlag = "--team-max-upload-mb"

// SetSharedUploads makes uploads go to the blob store. Call before
// serving requests.
func (s *Service) SetSharedUploads(u *SharedUploads) {
	s.uploads.shared = u
	if len(u.URLKey) > 0 {
		s.uploads.secret = u.URLKey
	}
}

// uploadPresent reports whether the team uploaded the files of hash.
func (s *Service) uploadPresent(ctx context.Context, team, hash string) (bool, error) {
	sh := s.uploads.shared
	if sh == nil {
		return s.uploads.present(team, hash), nil
	}
	if checkUploadKey(team, hash) != nil {
		return false, nil
	}
	u, err := sh.Repo.Upload(ctx, team, hash)
	if errors.Is(err, errdefs.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// A pruner may have deleted the blob in the instant another process
	// recorded the same content again (pruneShared): forget the row so the
	// client uploads the files again, rather than a build failing on them.
	d, err := blob.ParseDigest(u.BlobDigest)
	if err != nil {
		return false, err
	}
	if ok, err := sh.Store.Exists(ctx, d); err != nil || ok {
		return ok, err
	}
	if _, _, err := sh.Repo.DeleteUpload(ctx, u); err != nil {
		return false, err
	}
	return false, nil
}

// uploadDir returns the directory holding the team's files of hash on
// this server, pulling them from the blob store when they are shared.
func (s *Service) uploadDir(ctx context.Context, team, hash string) (string, error) {
	sh := s.uploads.shared
	if sh == nil {
		if !s.uploads.present(team, hash) {
			return "", errdefs.Invalid("files %s were not uploaded", hash)
		}
		return s.uploads.filesDir(team, hash), nil
	}
	if err := checkUploadKey(team, hash); err != nil {
		return "", err
	}
	u, err := sh.Repo.Upload(ctx, team, hash)
	if err != nil {
		return "", err
	}
	d, err := blob.ParseDigest(u.BlobDigest)
	if err != nil {
		return "", err
	}
	if sh.Puller == nil {
		return "", errdefs.Precondition("this server does not build (an api replica)")
	}
	dst := filepath.Join(PulledLayersDir(s.cfg.DataDir), d.Hex(), "diff")
	if err := sh.Puller.Ensure(ctx, d, dst, "uploaded files "+hash); err != nil {
		return "", err
	}
	return dst, nil
}

// publish stores an upload unpacked (and checked) in dir in the blob store
// and records it. A hash names one content: another upload of it must
// unpack to the same digest, whichever replica received the first.
func (u *uploads) publish(ctx context.Context, team, hash, dir string, res archive.Result) (int, error) {
	sh := u.shared
	conflict := errdefs.Conflict("files for hash %s were uploaded already with other content; a files hash names one content: "+
		"compute it from the files (the E2B SDKs and sbx template build do)", hash)
	if old, err := sh.Repo.Upload(ctx, team, hash); err == nil {
		if old.ContentDigest != res.Digest {
			return 0, conflict
		}
		return res.Entries, nil // the same files again
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return 0, err
	}
	if err := sh.checkCap(ctx, team, res.Bytes); err != nil {
		return 0, err // before publishing: a refused upload leaves no blob
	}
	d, _, err := layer.Publish(ctx, sh.Store, dir)
	if err != nil {
		return 0, err
	}
	got, err := sh.Repo.PutUpload(ctx, store.Upload{TeamID: team, FilesHash: hash, BlobDigest: string(d),
		ContentDigest: res.Digest, Entries: res.Entries, Bytes: res.Bytes, CreatedAt: time.Now().UTC()})
	if err != nil {
		return 0, err
	}
	if got.ContentDigest != res.Digest {
		return 0, conflict // another replica recorded other files first
	}
	return res.Entries, nil
}

// reserve returns the budget an upload of the team's files of hash is
// unpacked against, as they arrive: what the team's recorded uploads and
// its other uploads unpacking on this process leave of MaxTeamBytes. Files
// past it stop the upload (413) before they are written. The same files
// again (a hash already recorded) are not charged: they may unpack to the
// recorded size, and more is other content (409). release gives back
// what was reserved; call it once the upload is recorded or refused.
func (sh *SharedUploads) reserve(ctx context.Context, team, hash string) (reserve func(int64) error, release func(), err error) {
	if sh.MaxTeamBytes <= 0 {
		return nil, func() {}, nil
	}
	if old, err := sh.Repo.Upload(ctx, team, hash); err == nil {
		if old.Bytes <= 0 { // recorded before sizes were: not charged, size unknown
			return nil, func() {}, nil
		}
		var n int64
		return func(size int64) error {
			if n += size; n > old.Bytes {
				return errdefs.Conflict("files for hash %s were uploaded already with other content; a files hash names one "+
					"content: compute it from the files (the E2B SDKs and sbx template build do)", hash)
			}
			return nil
		}, func() {}, nil
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return nil, nil, err
	}
	held, err := sh.Repo.UploadBytes(ctx, team)
	if err != nil {
		return nil, nil, err
	}
	var mine int64
	reserve = func(size int64) error {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		others := sh.unpacking[team]
		if held+others+size > sh.MaxTeamBytes {
			return sh.overCap(held + others + size)
		}
		if sh.unpacking == nil {
			sh.unpacking = map[string]int64{}
		}
		sh.unpacking[team] += size
		mine += size
		return nil
	}
	release = func() {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		if mine == 0 {
			return // nothing reserved (the first file was refused): the map may not exist
		}
		if sh.unpacking[team] -= mine; sh.unpacking[team] <= 0 {
			delete(sh.unpacking, team)
		}
		mine = 0
	}
	return reserve, release, nil
}

// checkCap refuses an upload of n bytes that would take the team's
// uploads over MaxTeamBytes, once it is unpacked (reserve bounded it as
// it arrived; this sees uploads other processes recorded meanwhile).
// Concurrent uploads of one team on different replicas may each pass and
// overshoot it by what they carry; the cap bounds a team's share of the
// store, it is not an exact quota.
func (sh *SharedUploads) checkCap(ctx context.Context, team string, n int64) error {
	if sh.MaxTeamBytes <= 0 {
		return nil
	}
	held, err := sh.Repo.UploadBytes(ctx, team)
	if err != nil {
		return err
	}
	if held+n <= sh.MaxTeamBytes {
		return nil
	}
	return sh.overCap(held + n)
}

// overCap is the refusal of an upload that would make the team hold total
// bytes.
func (sh *SharedUploads) overCap(total int64) error {
	return errdefs.TooLarge("build context upload refused: this team's uploads would hold %d MiB, over the cap of %d MiB per team; "+
		"uploads are deleted %d h after they were made, so wait for older ones to expire, leave big files out with .dockerignore, "+
		"or ask the operator to raise the cap (sbx serve %s)", (total+(1<<20)-1)>>20, sh.MaxTeamBytes>>20, int(PruneAge.Hours()), TeamUploadsFlag)
}

// pruneShared deletes the uploads recorded longer than PruneAge ago and
// the blobs no other upload or layer stack names, so a team's budget
// frees up. Every process sharing the database may run it at once: each
// row is deleted by one of them (DeleteUpload), and deleting a blob twice
// is not an error.
func (sh *SharedUploads) pruneShared(ctx context.Context, log *slog.Logger, now time.Time) (int, error) {
	const batch = 100
	removed := 0
	for {
		old, err := sh.Repo.UploadsBefore(ctx, now.Add(-PruneAge), batch)
		if err != nil {
			return removed, err
		}
		progress := removed
		for _, u := range old {
			deleted, orphan, err := sh.Repo.DeleteUpload(ctx, u)
			if err != nil {
				return removed, err
			}
			if !deleted {
				continue // another process pruned it, or it was uploaded again
			}
			removed++
			if !orphan {
				continue
			}
			d, err := blob.ParseDigest(u.BlobDigest)
			if err == nil {
				err = sh.Store.Delete(ctx, d)
			}
			if err != nil {
				log.Warn("delete the blob of an expired upload", "team.id", u.TeamID, "digest", u.BlobDigest, "err", err)
			}
		}
		if len(old) < batch || progress == removed {
			return removed, nil
		}
	}
}
