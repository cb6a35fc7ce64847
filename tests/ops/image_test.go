package ops

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/sbxdev/sbx/internal/testenv"
	"github.com/sbxdev/sbx/tests/harness"
)

// TestImage builds the server image with `make image` (its root
// filesystem comes from the machine-wide rootfs cache after the first
// build), checks its config (entrypoint, command, port, volumes, labels),
// unpacks it the way a container runtime does and runs the image's own
// sbx and crun from that tree (chroot). Then it runs the image with crun,
// privileged like `podman run --privileged`, and creates a sandbox through
// the sbx serve inside it.
func TestImage(t *testing.T) {
	testenv.Require(t, append(testenv.Integration, testenv.Binary("debootstrap", "apt-get install debootstrap"), testenv.Binary("nsenter", "part of util-linux"))...)
	root := harness.RepoRoot(t)
	archive := filepath.Join(t.TempDir(), "sbx-image.tar")
	binDir := t.TempDir()
	run(t, root, "make", "--no-print-directory", "image", "BIN="+binDir, "IMAGE="+archive)
	version := sbxVersion(t, filepath.Join(binDir, "sbx")).Version

	img, err := tarball.ImageFromPath(archive, nil)
	if err != nil {
		t.Fatalf("read %s as an image archive: %v", archive, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if want := []string{"/usr/bin/tini", "--", "/usr/bin/sbx", "serve"}; !slices.Equal(c.Entrypoint, want) {
		t.Errorf("entrypoint %q, want %q", c.Entrypoint, want)
	}
	if want := []string{"--listen", "0.0.0.0:3000", "--data-dir", "/var/lib/sbx"}; !slices.Equal(c.Cmd, want) {
		t.Errorf("cmd %q, want %q", c.Cmd, want)
	}
	if _, ok := c.ExposedPorts["3000/tcp"]; !ok {
		t.Errorf("exposed ports %v lack 3000/tcp", c.ExposedPorts)
	}
	for _, v := range []string{"/var/lib/sbx", "/var/cache/sbx"} {
		if _, ok := c.Volumes[v]; !ok {
			t.Errorf("volumes %v lack %s", c.Volumes, v)
		}
	}
	if got := c.Labels["org.opencontainers.image.version"]; got != version {
		t.Errorf("version label %q, want %q", got, version)
	}
	if cf.OS != "linux" || cf.Architecture == "" {
		t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
	}

	// Unpack the flattened filesystem, as a runtime would.
	tree := filepath.Join(t.TempDir(), "rootfs")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	untar := exec.CommandContext(t.Context(), "tar", "-x", "-C", tree, "--numeric-owner")
	untar.Stdin = rc
	if out, err := untar.CombinedOutput(); err != nil {
		t.Fatalf("unpack the image: %v\n%s", err, out)
	}
	for _, f := range []string{"usr/bin/sbx", "usr/lib/sbx/envd", "usr/lib/sbx/codeinterp", "usr/bin/tini", "usr/bin/crun", "usr/sbin/debootstrap", "bin/sh"} {
		if _, err := os.Stat(filepath.Join(tree, f)); err != nil {
			t.Errorf("image lacks /%s: %v", f, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(tree, "var", "lib", "sbx")); err != nil || fi.Mode().Perm() != 0o711 {
		t.Errorf("/var/lib/sbx in the image: %v, %v; want mode 0711", fi, err)
	}
	out, err := exec.CommandContext(t.Context(), "chroot", tree, "/usr/bin/sbx", "version", "--json").Output()
	var v versionJSON
	if err != nil || json.Unmarshal(out, &v) != nil || v.Version != version {
		t.Errorf("sbx version in the image: %v, %s; want %s", err, out, version)
	}
	// crun re-executes itself through /proc: give it one, in a mount
	// namespace of its own so nothing leaks onto the host.
	crun := exec.CommandContext(t.Context(), "unshare", "--mount", "--fork", "sh", "-c",
		`mount -t proc proc "$1/proc" && exec chroot "$1" /usr/bin/crun --version`, "sh", tree)
	if out, err := crun.CombinedOutput(); err != nil || !strings.Contains(string(out), "crun version") {
		t.Errorf("crun in the image: %v\n%s", err, out)
	}

	runImageUnderCrun(t, tree, cf, filepath.Join(binDir, "sbx"))
}
