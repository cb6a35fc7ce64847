// Command mkimage builds sbx's server image without a container engine
// (`make image`): a Debian root filesystem with what `sbx serve` runs
// (crun, nftables-era iptables, iproute2, debootstrap, tini), built with
// the same debootstrap-based builder and cache as the templates, plus the
// sbx binaries, written as an archive that `podman load` or `docker load`
// reads and `crane push` / `skopeo copy docker-archive:` publish.
//
// It needs root (debootstrap), like building templates.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sbxdev/sbx/internal/ociimage"
	"github.com/sbxdev/sbx/internal/rootfs"
)

// serverRecipe is the image's root filesystem. tini is PID 1 so that the
// processes sbx's runtimes leave behind are reaped; sbx serve is its child.
func serverRecipe() rootfs.Recipe {
	return rootfs.Recipe{
		Name:     "server-image",
		Packages: []string{"crun", "iptables", "iproute2", "debootstrap", "ca-certificates", "tini"},
		Script: `set -eu
mkdir -p /var/lib/sbx /var/cache/sbx
chmod 0711 /var/lib/sbx
rm -f /etc/hostname
`,
	}
}

func main() {
	out := flag.String("out", "dist/sbx-image.tar", "image archive to write")
	ref := flag.String("tag", "sbx:dev", "image name and tag inside the archive")
	version := flag.String("version", "0.0.0-dev", "sbx version, for the image's labels")
	binDir := flag.String("bin", "bin", "directory holding sbx, envd and codeinterp (make build)")
	cache := flag.String("rootfs-cache", "", "root filesystem cache (default: sbx's, /var/cache/sbx/rootfs)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, log, *out, *ref, *version, *binDir, *cache); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, out, ref, version, binDir, cache string) error {
	b := rootfs.NewBuilder(cache, log)
	r := serverRecipe()
	b.AddRecipes(r)
	tree, err := b.Ensure(ctx, r.Name, func(line string) { log.Info(line) })
	if err != nil {
		return err
	}
	img, err := ociimage.Build(ociimage.Spec{
		RootFS: tree,
		Files: []ociimage.File{
			{Src: filepath.Join(binDir, "sbx"), Dst: "/usr/bin/sbx", Mode: 0o755},
			{Src: filepath.Join(binDir, "envd"), Dst: "/usr/lib/sbx/envd", Mode: 0o755},
			{Src: filepath.Join(binDir, "codeinterp"), Dst: "/usr/lib/sbx/codeinterp", Mode: 0o755},
		},
		Entrypoint: []string{"/usr/bin/tini", "--", "/usr/bin/sbx", "serve"},
		// Inside a container the API must listen beyond loopback; the
		// data dir and rootfs cache are volumes so sandboxes, keys and
		// built templates outlive the container (docs/operations.md).
		Cmd:     []string{"--listen", "0.0.0.0:3000", "--data-dir", "/var/lib/sbx"},
		Env:     []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Ports:   []string{"3000/tcp"},
		Volumes: []string{"/var/lib/sbx", "/var/cache/sbx"},
		Labels: map[string]string{
			"org.opencontainers.image.title":       "sbx",
			"org.opencontainers.image.description": "Self-hosted sandboxes for AI-generated code, compatible with the E2B SDKs",
			"org.opencontainers.image.version":     version,
			"org.opencontainers.image.source":      "https://github.com/sbxdev/sbx",
		},
		Created: time.Unix(0, 0).UTC(),
	})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := ociimage.Write(out, ref, img); err != nil {
		return err
	}
	d, _ := img.Digest()
	log.Info("image written", "path", out, "tag", ref, "digest", d.String())
	return nil
}
