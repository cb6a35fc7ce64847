package builder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/sbxdev/sbx/internal/archive"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/hostfs"
	"github.com/sbxdev/sbx/internal/netguard"
)

// Images pulls OCI images from registries and unpacks each (flattened) into
// <dir>/<digest>/rootfs, once per digest.
//
// The image reference is a tenant's, so a pull is a request the host makes
// on a tenant's behalf: every connection (the registry, its token realm,
// every redirect, blob storage) goes through the SSRF guard after DNS, every
// response is capped, and nothing a registry answers is repeated to the
// tenant (errors say the status and a fixed text).
type Images struct {
	dir string
	cfg ImagesConfig
	log *slog.Logger
	mu  sync.Mutex // one pull at a time: they are rare and disk-heavy
}

// ImagesConfig guards and bounds registry pulls.
type ImagesConfig struct {
	// Guard checks each connection's address; nil refuses private,
	// loopback, link-local and the host's own addresses (netguard's
	// defaults), with a hint naming --registry-allow-private.
	Guard *netguard.Guard
	// MaxBytes caps one image: what is downloaded (compressed) and what it
	// unpacks to; 0 = DefaultImageMaxMB.
	MaxBytes int64
}

// DefaultImageMaxMB caps an image pulled as a build base unless configured.
const DefaultImageMaxMB = 8192

// maxMetaBytes caps a registry answer that is not a blob: a manifest, an
// index, a token, an error.
const maxMetaBytes = 4 << 20

// RegistryGuardHint tells an operator how to let pulls reach a refused address.
const RegistryGuardHint = "allow a registry there with sbx serve --registry-allow-private or --registry-allow-cidr"

// NewImages returns an image store under dir (e.g. <data-dir>/images).
func NewImages(dir string, cfg ImagesConfig, log *slog.Logger) *Images {
	if cfg.Guard == nil {
		cfg.Guard = &netguard.Guard{Hint: RegistryGuardHint}
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultImageMaxMB << 20
	}
	return &Images{dir: dir, cfg: cfg, log: log}
}

// imageMeta is what a build needs from an image's config.
type imageMeta struct {
	Digest  string            `json:"digest"`
	Ref     string            `json:"ref"`
	User    string            `json:"user"`
	Workdir string            `json:"workdir"`
	Env     map[string]string `json:"env"`
	Cmd     string            `json:"cmd"`
}

// Pull resolves ref for the host's platform and returns it as a build base.
// Registries on localhost and private addresses are spoken to over plain
// HTTP (go-containerregistry's rule); credentials come from the Docker
// config (~/.docker/config.json) when present.
func (im *Images) Pull(ctx context.Context, ref string, progress func(string)) (Base, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return Base{}, errdefs.Invalid("image reference %q is invalid: %v", ref, err)
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	t0 := time.Now()
	progress(fmt.Sprintf("resolving image %s", r.Name()))
	tr := im.transport()
	img, err := remote.Image(r, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: goruntime.GOARCH}), remote.WithTransport(tr))
	if err != nil {
		return Base{}, im.pullError(ref, r, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return Base{}, im.pullError(ref, r, err)
	}
	dir := filepath.Join(im.dir, digest.Hex)
	root := filepath.Join(dir, "rootfs")
	var meta imageMeta
	if b, err := os.ReadFile(filepath.Join(dir, "complete")); err == nil && json.Unmarshal(b, &meta) == nil {
		progress(fmt.Sprintf("image %s (%s) already unpacked", ref, digest))
		return meta.base(root), nil
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return Base{}, im.pullError(ref, r, err)
	}
	meta = imageMeta{Digest: digest.String(), Ref: ref, User: cfg.Config.User, Workdir: cfg.Config.WorkingDir,
		Env: map[string]string{}, Cmd: strings.Join(append(cfg.Config.Entrypoint, cfg.Config.Cmd...), " ")}
	for _, kv := range cfg.Config.Env {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "PATH" {
			meta.Env[k] = v
		}
	}
	progress(fmt.Sprintf("unpacking %s (%s)", ref, digest))
	tmp := dir + ".tmp"
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(filepath.Join(tmp, "rootfs"), 0o755); err != nil {
		return Base{}, err
	}
	if err := im.unpack(ctx, ref, img, filepath.Join(tmp, "rootfs")); err != nil {
		os.RemoveAll(tmp)
		if ctx.Err() != nil {
			return Base{}, errdefs.Unavailable("pull image %s: canceled", ref)
		}
		if tr.over() {
			return Base{}, im.tooLarge(ref)
		}
		var le *archive.LimitError
		var de *errdefs.Error
		switch {
		case errors.As(err, &le):
			return Base{}, im.tooLarge(ref)
		case errors.As(err, &de) && errors.Is(err, errdefs.ErrInvalidArgument):
			im.log.Warn("image layers not unpacked", "image", ref, "err", err)
			return Base{}, errdefs.Invalid("pull image %s: its layers could not be downloaded and unpacked safely (details are in the server's log)", ref)
		}
		return Base{}, im.pullError(ref, r, err)
	}
	b, _ := json.Marshal(meta)
	if err := os.WriteFile(filepath.Join(tmp, "complete"), b, 0o644); err != nil {
		return Base{}, err
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return Base{}, err
	}
	progress(fmt.Sprintf("image %s ready in %s", ref, time.Since(t0).Round(time.Millisecond)))
	return meta.base(root), nil
}

func (m imageMeta) base(root string) Base {
	user, dir := m.User, m.Workdir
	if user == "" {
		user = "root"
	}
	if dir == "" {
		dir = "/"
	}
	return Base{Key: "image:" + m.Digest, Layers: []string{root}, User: user, Workdir: dir, Env: m.Env}
}

// maxImageEntries bounds the files of one image (inodes).
const maxImageEntries = 1 << 22

// unpack extracts the flattened image into dst with internal/archive, as
// uploads and ADD are: the layers are the registry's, so no entry may
// leave dst or go through a symlink, and device nodes are skipped (a
// sandbox has no use for them, and an image could plant the host's disk).
// Owners are kept.
func (im *Images) unpack(ctx context.Context, ref string, img v1.Image, dst string) error {
	rc := mutate.Extract(img)
	defer rc.Close()
	d, err := hostfs.OpenDir(dst)
	if err != nil {
		return err
	}
	defer d.Close()
	skipped := 0
	_, err = archive.Extract(&ctxReader{ctx: ctx, r: rc}, d, archive.Options{Name: "image " + ref, MaxBytes: im.cfg.MaxBytes,
		MaxEntries: maxImageEntries, SkipSpecial: true, Owners: true, Note: func(string) { skipped++ }})
	if skipped > 0 {
		im.log.Debug("image entries skipped", "image", ref, "count", skipped)
	}
	return err
}

// ctxReader stops a long extraction when its build is canceled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
