package hostfs

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/errdefs"
)

func TestMkdirAllAndLinkRefuseSymlinks(t *testing.T) {
	t.Parallel()
	dir, host := plant(t)
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, name := range []string{"dir-link/new", "sub/../dir-link/new", "abs-link/x"} {
		if sub, err := d.MkdirAll(name, 0o755); err == nil {
			sub.Close()
			t.Errorf("MkdirAll(%q) went through a symlink", name)
		}
	}
	if _, err := d.MkdirAll("dir-link/new", 0o755); !errors.Is(err, ErrSymlink) {
		t.Errorf("MkdirAll through dir-link: %v, want ErrSymlink", err)
	} else if pe := (*os.PathError)(nil); errors.As(err, &pe) && pe.Path != "dir-link" {
		t.Errorf("MkdirAll names %q, want dir-link", pe.Path)
	}
	if _, err := d.MkdirAll("ok/x", 0o755); !errors.Is(err, ErrNotDir) {
		t.Errorf("MkdirAll through a file: %v, want ErrNotDir", err)
	}
	sub, err := d.MkdirAll("a/b/c", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	sub.Close()
	if err := d.Link(d, "abs-link", "h"); err == nil {
		t.Error("Link to a symlink succeeded")
	}
	if err := d.Link(d, "ok", "h"); err != nil {
		t.Errorf("Link to a file: %v", err)
	}
	if ents, _ := os.ReadDir(host); len(ents) != 1 {
		t.Errorf("the host dir changed: %v", ents)
	}
}

func TestSubInRootStaysInside(t *testing.T) {
	t.Parallel()
	dir, _ := plant(t)
	if err := os.Symlink("/", filepath.Join(dir, "root-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub", filepath.Join(dir, "sub-link")); err != nil {
		t.Fatal(err)
	}
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	in, err := d.SubInRoot("sub-link")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := in.ReadFile("ok", 100); err != nil || string(b) != "nested" {
		t.Errorf("sub-link/ok = %q, %v", b, err)
	}
	in.Close()
	// "/" inside the context is the context itself: the host's root is out of reach.
	r, err := d.SubInRoot("root-link")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if b, err := r.ReadFile("ok", 100); err != nil || string(b) != "fine" {
		t.Errorf("root-link/ok = %q, %v (want the context's own file)", b, err)
	}
	if _, err := d.SubInRoot("dir-link"); err == nil {
		t.Error("dir-link (to a host directory) resolved")
	}
}

func TestCopyTreeCopiesLinksAsLinks(t *testing.T) {
	t.Parallel()
	dir, _ := plant(t)
	_ = os.Remove(filepath.Join(dir, "fifo"))
	dst := t.TempDir()
	src, _ := OpenDir(dir)
	defer src.Close()
	to, _ := OpenDir(dst)
	defer to.Close()
	var skipped []string
	if err := CopyTree(src, to, func(p string) { skipped = append(skipped, p) }); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"abs-link", "rel-link", "dir-link", "magic"} {
		fi, err := os.Lstat(filepath.Join(dst, l))
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s: %v %v, want a symlink", l, fi, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dst, "sub", "ok")); err != nil || string(b) != "nested" {
		t.Errorf("sub/ok = %q, %v", b, err)
	}
	if len(skipped) != 0 {
		t.Errorf("skipped %v", skipped)
	}
}

// TestCopyTreeRefusesDeepTrees: a tenant's tree nested past MaxCopyDepth
// fails with ErrTooDeep instead of holding three descriptors per level
// until the server runs out; a tree at the limit copies.
func TestCopyTreeRefusesDeepTrees(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		levels int
		err    error
	}{
		{levels: MaxCopyDepth, err: nil},
		{levels: MaxCopyDepth + 1, err: ErrTooDeep},
	} {
		src := t.TempDir()
		d, _ := OpenDir(src)
		defer d.Close()
		nested, err := d.MkdirAll(strings.Repeat("d/", tc.levels-1)+"d", 0o755)
		if err != nil {
			t.Fatal(err)
		}
		nested.Close()
		to, _ := OpenDir(t.TempDir())
		defer to.Close()
		err = CopyTree(d, to, nil)
		if !errors.Is(err, tc.err) {
			t.Errorf("%d levels: err = %v, want %v", tc.levels, err, tc.err)
		}
		if err == nil {
			continue
		}
		// The tree is a tenant's (a build context): a 400 saying what to
		// do, not a 500, and no host path in what the client sees.
		if got := errdefs.HTTPStatus(err); got != http.StatusBadRequest {
			t.Errorf("%d levels: HTTP status %d, want 400", tc.levels, got)
		}
		if msg := errdefs.Message(err); !strings.Contains(msg, "flatten") || strings.Contains(msg, src) {
			t.Errorf("%d levels: client message %q", tc.levels, msg)
		}
	}
}

// TestPath: a Dir's path for messages is its parent's plus its name.
func TestPath(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	d, _ := OpenDir(root)
	defer d.Close()
	if _, err := d.MkdirAll("a/b/c", 0o755); err != nil {
		t.Fatal(err)
	}
	a, _ := d.Sub("a")
	defer a.Close()
	bc, _ := a.Sub("b/c")
	defer bc.Close()
	same, _ := bc.Sub(".")
	defer same.Close()
	for _, tc := range []struct {
		d    *Dir
		want string
	}{
		{d, root},
		{a, root + "/a"},
		{bc, root + "/a/b/c"},
		{same, root + "/a/b/c"},
	} {
		if got := tc.d.Path(); got != tc.want {
			t.Errorf("Path() = %q, want %q", got, tc.want)
		}
	}
}
