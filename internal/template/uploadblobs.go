package template

import (
	"context"
	"errors"
	"path/filepath"
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
}

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
	_, err := sh.Repo.Upload(ctx, team, hash)
	if errors.Is(err, errdefs.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
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
	d, _, err := layer.Publish(ctx, sh.Store, dir)
	if err != nil {
		return 0, err
	}
	got, err := sh.Repo.PutUpload(ctx, store.Upload{TeamID: team, FilesHash: hash, BlobDigest: string(d),
		ContentDigest: res.Digest, Entries: res.Entries, CreatedAt: time.Now().UTC()})
	if err != nil {
		return 0, err
	}
	if got.ContentDigest != res.Digest {
		return 0, conflict // another replica recorded other files first
	}
	return res.Entries, nil
}
