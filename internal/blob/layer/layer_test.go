package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/testenv"
)

// makeLayer builds a layer like a captured overlay upper dir: files with
// owners and setuid, a hard link, a symlink pointing out of the tree, a
// whiteout and an opaque directory.
func makeLayer(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "home/user/opaque"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "home/user/notes.txt"), []byte("written before the pause\n"), 0o640))
	must(os.Chown(filepath.Join(dir, "home/user/notes.txt"), 1000, 1000))
	must(os.Chown(filepath.Join(dir, "home/user"), 1000, 1000))
	must(os.Link(filepath.Join(dir, "home/user/notes.txt"), filepath.Join(dir, "home/user/hardlink")))
	must(os.Symlink("/etc/shadow", filepath.Join(dir, "home/user/escape")))
	must(os.WriteFile(filepath.Join(dir, "home/user/suid"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Chmod(filepath.Join(dir, "home/user/suid"), 0o4755))
	must(unix.Mknod(filepath.Join(dir, "home/user/deleted"), unix.S_IFCHR, 0))
	must(unix.Setxattr(filepath.Join(dir, "home/user/opaque"), "trusted.overlay.opaque", []byte("y"), 0))
	must(os.Chmod(dir, 0o755))
}

// describe lists a tree as `ls -lan`-like lines (plus xattrs of the kind
// layers keep), to compare an unpacked layer with its source.
func describe(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		st := fi.Sys().(*syscall.Stat_t)
		line := []string{rel, fi.Mode().String(), itoa(st.Uid), itoa(st.Gid), itoa(uint32(st.Nlink)), itoa(uint32(st.Rdev))}
		if fi.Mode().IsRegular() {
			c, _ := os.ReadFile(p)
			line = append(line, string(c), fi.ModTime().UTC().String())
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			l, _ := os.Readlink(p)
			line = append(line, "-> "+l)
		} else if v, ok := lgetxattr(p, "trusted.overlay.opaque"); ok {
			line = append(line, "opaque="+string(v))
		}
		b.WriteString(strings.Join(line, " ") + "\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func itoa(n uint32) string { return fmtU(n) }

func fmtU(n uint32) string {
	if n == 0 {
		return "0"
	}
	var d []byte
	for n > 0 {
		d = append([]byte{byte('0' + n%10)}, d...)
		n /= 10
	}
	return string(d)
}

// A layer published and pulled elsewhere is the same tree (owners, modes,
// links, whiteout, opaque mark), the symlink stored, not followed; the
// same tree gives the same digest; pulls of one layer unpack it once.
func TestPublishPullRoundTrip(t *testing.T) {
	testenv.Require(t, testenv.Root)
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "layer")
	makeLayer(t, src)
	st, cache := storeAndCache(t)
	d1, n, err := Publish(ctx, st, src)
	if err != nil {
		t.Fatal(err)
	}
	d2, _, err := Publish(ctx, st, src)
	if err != nil || d1 != d2 || n == 0 {
		t.Fatalf("publishing one tree twice: %s then %s (%v); want one digest", d1, d2, err)
	}
	p := &Puller{Cache: cache}
	dst := filepath.Join(t.TempDir(), "pulled", "diff")
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = p.Ensure(ctx, d1, dst, "test layer") }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got, want := describe(t, dst), describe(t, src); got != want {
		t.Fatalf("pulled layer differs:\n got:\n%s\nwant:\n%s", got, want)
	}
	if s := cache.Stats(); s.Fetches != 1 {
		t.Fatalf("cache fetched %d times, want 1", s.Fetches)
	}
	// The layer works as an overlay lower: the whiteout hides, the
	// opaque directory hides what is below it.
	lower := filepath.Join(t.TempDir(), "lower")
	if err := os.MkdirAll(filepath.Join(lower, "home/user/opaque"), 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(lower, "home/user/deleted"), []byte("x"), 0o644)
	_ = os.WriteFile(filepath.Join(lower, "home/user/opaque/below"), []byte("x"), 0o644)
	mnt := t.TempDir()
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, "lowerdir="+dst+":"+lower); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	for _, gone := range []string{"home/user/deleted", "home/user/opaque/below"} {
		if _, err := os.Lstat(filepath.Join(mnt, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s visible through the overlay (err %v); the layer's whiteout/opaque mark was lost", gone, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "home/user/notes.txt")); err != nil || !bytes.Contains(b, []byte("before the pause")) {
		t.Errorf("notes.txt through the overlay: %q, %v", b, err)
	}
}

// storeAndCache is a directory blob store and a node's pull cache of it,
// both closed at the test's end.
func storeAndCache(t *testing.T) (*blob.FileStore, *blob.Cache) {
	t.Helper()
	st, err := blob.NewFileStore(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cache, err := blob.NewCache(filepath.Join(t.TempDir(), "cache"), st, 1<<30, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	return st, cache
}

// A layer the store lost fails with a message naming its owner and what
// to do, and leaves nothing behind.
func TestPullMissingBlob(t *testing.T) {
	ctx := context.Background()
	_, cache := storeAndCache(t)
	parent := t.TempDir()
	err := Pull(ctx, cache, blob.FromBytes([]byte("never stored")), filepath.Join(parent, "l"), "sandbox x")
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "sandbox x") || !strings.Contains(err.Error(), "--blob-store") {
		t.Fatalf("err = %v; want a precondition error naming the sandbox and the flag", err)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Fatalf("a failed pull left %v", ents)
	}
}

// A blob whose tar would reach outside the layer (an absolute name, a
// write through a symlink it planted, a hard link to a host file, a device
// node other than a whiteout) is refused, and nothing of it is left.
func TestPullRefusesEscapes(t *testing.T) {
	testenv.Require(t, testenv.Root)
	ctx := context.Background()
	st, cache := storeAndCache(t)
	outside := t.TempDir()
	cases := []struct {
		name    string
		entries []*tar.Header
		want    string
	}{
		{"absolute", []*tar.Header{{Name: "/etc/cron.d/x", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2}}, "absolute"},
		{"dotdot", []*tar.Header{{Name: "a/../../x", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2}}, ".."},
		{"through symlink", []*tar.Header{{Name: "out", Typeflag: tar.TypeSymlink, Linkname: outside},
			{Name: "out/x", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2}}, "symlink"},
		{"hard link to host file", []*tar.Header{{Name: "shadow", Typeflag: tar.TypeLink, Linkname: "/etc/shadow"}}, "hard link"},
		{"device", []*tar.Header{{Name: "sda", Typeflag: tar.TypeBlock, Devmajor: 8, Mode: 0o600}}, "device"},
		{"char device not a whiteout", []*tar.Header{{Name: "mem", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 1, Mode: 0o600}}, "device"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, h := range tc.entries {
				if err := tw.WriteHeader(h); err != nil {
					t.Fatal(err)
				}
				if h.Size > 0 {
					_, _ = tw.Write([]byte("x\n"))
				}
			}
			_ = tw.Close()
			d, _, err := st.Put(ctx, &buf)
			if err != nil {
				t.Fatal(err)
			}
			parent := t.TempDir()
			err = Pull(ctx, cache, d, filepath.Join(parent, "l"), "template t")
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v; want it refused (%q)", err, tc.want)
			}
			if ents, _ := os.ReadDir(parent); len(ents) != 0 {
				t.Errorf("a refused pull left %v", ents)
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Errorf("a refused pull wrote outside the layer: %v", ents)
			}
		})
	}
}

// Of the extended attributes a tar carries, only archive.LayerXattrs reach
// the host: an overlay redirect or any other trusted attribute is dropped.
func TestPullKeepsOnlyLayerXattrs(t *testing.T) {
	testenv.Require(t, testenv.Root)
	ctx := context.Background()
	st, cache := storeAndCache(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755, Format: tar.FormatPAX, PAXRecords: map[string]string{
		"SCHILY.xattr.trusted.overlay.opaque":   "y",
		"SCHILY.xattr.trusted.overlay.redirect": "/etc",
		"SCHILY.xattr.trusted.other":            "z",
	}})
	_ = tw.Close()
	d, _, err := st.Put(ctx, &buf)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "l")
	if err := Pull(ctx, cache, d, dst, "template t"); err != nil {
		t.Fatal(err)
	}
	if v, ok := lgetxattr(filepath.Join(dst, "d"), "trusted.overlay.opaque"); !ok || string(v) != "y" {
		t.Errorf("opaque mark = %q, %v; want y", v, ok)
	}
	for _, name := range []string{"trusted.overlay.redirect", "trusted.other"} {
		if v, ok := lgetxattr(filepath.Join(dst, "d"), name); ok {
			t.Errorf("%s = %q reached the host; only archive.LayerXattrs may", name, v)
		}
	}
}
