package builder

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
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

	"github.com/sbxdev/sbx/internal/errdefs"
)

// Images pulls OCI images from registries and unpacks each (flattened) into
// <dir>/<digest>/rootfs, once per digest.
type Images struct {
	dir string
	log *slog.Logger
	mu  sync.Mutex // one pull at a time: they are rare and disk-heavy
}

// NewImages returns an image store under dir (e.g. <data-dir>/images).
func NewImages(dir string, log *slog.Logger) *Images { return &Images{dir: dir, log: log} }

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
	img, err := remote.Image(r, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: goruntime.GOARCH}))
	if err != nil {
		return Base{}, errdefs.Invalid("pull image %s: %v (check the name and tag, and that this server can reach the registry)", ref, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return Base{}, fmt.Errorf("image digest: %w", err)
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
		return Base{}, fmt.Errorf("image config: %w", err)
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
	if err := untar(ctx, mutate.Extract(img), filepath.Join(tmp, "rootfs")); err != nil {
		os.RemoveAll(tmp)
		return Base{}, fmt.Errorf("unpack image %s: %w", ref, err)
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

// untar unpacks a flattened image with GNU tar, which keeps owners, modes,
// hard links and device nodes exactly.
func untar(ctx context.Context, rc io.ReadCloser, dst string) error {
	defer rc.Close()
	cmd := exec.CommandContext(ctx, "tar", "-x", "-p", "--numeric-owner", "-C", dst, "-f", "-")
	cmd.Stdin = rc
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("tar: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
