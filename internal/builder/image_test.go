package builder

import (
	"bytes"
	"io"
	"log"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/sbxdev/sbx/internal/netguard"
	"github.com/sbxdev/sbx/internal/runtime/runtimetest"
)

// pushImage serves a registry in-process and pushes a one-layer image made
// from dir with the given env and workdir; it returns the image reference.
func pushImage(t *testing.T, dir string, env []string, workdir string) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(nilLogger())))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	var tarBuf bytes.Buffer
	cmd := exec.Command("tar", "-C", dir, "-cf", "-", ".")
	cmd.Stdout = &tarBuf
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarBuf.Bytes())), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goarch()
	cf.Config.Env, cf.Config.WorkingDir = env, workdir
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	ref := u.Host + "/test/busybox:1"
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	return ref
}

func TestBuildFromRegistryImage(t *testing.T) {
	env := newTestEnv(t)
	bb := runtimetest.BusyboxRootfs(t)
	ref := pushImage(t, bb, []string{"PATH=/bin:/sbin", "FROM_IMAGE=yes"}, "/work")
	p, err := Parse(strings.NewReader("FROM "+ref+"\nRUN echo \"img=$FROM_IMAGE\" > /result.txt\n"), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !p.FromImage || p.From != ref {
		t.Fatalf("plan from %q image=%v", p.From, p.FromImage)
	}
	im := NewImages(filepath.Join(env.data, "images"), ImagesConfig{Guard: loopbackOK()}, testLogger(t))
	var lines []string
	base, err := im.Pull(t.Context(), ref, func(l string) { lines = append(lines, l) })
	if err != nil {
		t.Fatal(err)
	}
	if base.Workdir != "/work" || base.User != "root" || base.Env["FROM_IMAGE"] != "yes" || !strings.HasPrefix(base.Key, "image:sha256:") {
		t.Fatalf("base %+v", base)
	}
	if _, err := os.Stat(filepath.Join(base.Layers[0], "bin", "busybox")); err != nil {
		t.Fatalf("unpacked image lacks /bin/busybox: %v", err)
	}
	res, err := env.exec.Build(t.Context(), Request{Base: base, Steps: p.Steps})
	if err != nil {
		t.Fatal(err)
	}
	if out := env.inspect(t, res, "cat /result.txt"); !strings.Contains(out, "img=yes") {
		t.Errorf("RUN in the image did not see its ENV: %q", out)
	}
	// A second pull of the same digest reuses the unpacked root filesystem.
	again, err := im.Pull(t.Context(), ref, func(l string) { lines = append(lines, l) })
	if err != nil || again.Layers[0] != base.Layers[0] || !strings.Contains(strings.Join(lines, "\n"), "already unpacked") {
		t.Errorf("second pull: %v %v\n%s", again.Layers, err, strings.Join(lines, "\n"))
	}
	if _, err := im.Pull(t.Context(), strings.Replace(ref, ":1", ":missing", 1), func(string) {}); err == nil ||
		!strings.Contains(err.Error(), "pull image") {
		t.Errorf("pull of a missing tag: %v", err)
	}
}

func goarch() string { return goruntime.GOARCH }

// loopbackOK is a guard that lets pulls reach the test registries on
// 127.0.0.1 (and nothing else private).
func loopbackOK() *netguard.Guard {
	return &netguard.Guard{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Hint: RegistryGuardHint}
}

func nilLogger() *log.Logger { return log.New(io.Discard, "", 0) }
