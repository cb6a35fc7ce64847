package volume

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/hostfs"
	"github.com/sbxdev/sbx/internal/testenv"
)

// shmDir is a fresh directory on a real tmpfs holding n empty files in
// "wide".
func shmDir(t *testing.T, n int) *hostfs.Dir {
	t.Helper()
	dir := testenv.Tmpfs(t)
	wide := filepath.Join(dir, "wide")
	if err := os.Mkdir(wide, 0o755); err != nil {
		t.Fatal(err)
	}
	testenv.ManyFiles(t, wide, n)
	d, err := hostfs.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// The attack: a sandbox fills a directory of its volume with far more
// names than a listing shows, then the tenant's SDK lists it. The listing
// is refused as before, but after reading what it has room for, not every
// name with a status each. Not parallel: the allocation count is its own.
func TestListRefusesAWideDirectoryUnread(t *testing.T) {
	const files = 150_000
	root := shmDir(t, files)
	d, err := root.Sub("wide")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var out []EntryStat
	alloc := testenv.BytesAllocated(func() { err = walk(d, "/wide", 1, &out) })
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("listing %d entries: %v, want resource exhausted", files, err)
	}
	// All 150,000 names and statuses take tens of MiB; the listing's own
	// 10,000 a few.
	t.Logf("refusing a listing of %d entries: %d KiB allocated", files, alloc>>10)
	if alloc > 16<<20 {
		t.Errorf("refusing a listing of %d entries allocated %d MiB: it read them all", files, alloc>>20)
	}
}

func TestRemoveAllInBatches(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 1024, 2*1024 + 3} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			wide := filepath.Join(dir, "wide")
			if err := os.MkdirAll(filepath.Join(wide, "sub", "deeper"), 0o755); err != nil {
				t.Fatal(err)
			}
			testenv.ManyFiles(t, wide, n)
			d, err := hostfs.OpenDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if err := removeAll(d, "wide"); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(wide); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("wide still there: %v", err)
			}
		})
	}
}

// The attack: a sandbox nests directories in its volume far deeper than
// any path (a loop of mkdir and cd), then its tenant deletes the tree.
// The delete must not follow it down holding a server fd (and a path
// string) per level: here the server has 1,000 fds to spare and the chain
// is 8,000 deep, so a delete that kept one per level fails with EMFILE,
// as every other request of the server would meanwhile. Not parallel: it
// lowers the process's fd limit.
func TestRemoveDeepChainIsRefused(t *testing.T) {
	const depth = 8000
	dir := t.TempDir()
	testenv.NestedDirs(t, dir, depth)
	d, err := hostfs.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	testenv.WithSpareFDs(t, 1000, func() { err = removeAll(d, "d") })
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("deleting an %d-deep chain: %.200v; want resource exhausted, within the server's fds", depth, err)
	}
}

// A tree up to the bound deletes whole.
func TestRemoveDeepTreeWithinBound(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	testenv.NestedDirs(t, dir, maxRemoveDepth)
	d, err := hostfs.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := removeAll(d, "d"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "d")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("chain still there: %v", err)
	}
}
