package hostfs

import (
	"errors"
	"io"
	"testing"

	"github.com/sbxdev/sbx/internal/testenv"
)

func TestReadDirN(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		files, n int
		want     int
		more     bool
	}{
		{"empty", 0, 10, 0, false},
		{"fewer than n", 3, 10, 3, false},
		{"exactly n", 10, 10, 10, false},
		{"one more than n", 11, 10, 10, true},
		{"several batches", 3*dirBatch + 7, 3*dirBatch + 7, 3*dirBatch + 7, false},
		{"cut within batches", 3*dirBatch + 7, dirBatch + 1, dirBatch + 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			testenv.ManyFiles(t, dir, tc.files)
			d, err := OpenDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			ents, more, err := d.ReadDirN(tc.n)
			if err != nil || len(ents) != tc.want || more != tc.more {
				t.Fatalf("ReadDirN(%d) of %d = %d entries, more %v, %v; want %d, %v", tc.n, tc.files, len(ents), more, err, tc.want, tc.more)
			}
			for i := 1; i < len(ents); i++ {
				if ents[i-1].Name >= ents[i].Name {
					t.Fatalf("not sorted: %q before %q", ents[i-1].Name, ents[i].Name)
				}
			}
		})
	}
}

// Reading a few entries of a huge directory on a real tmpfs costs what
// was read, not the directory: the bound applies while reading. Not
// parallel, so the allocation count is this test's own.
func TestReadDirNStopsReading(t *testing.T) {
	const files, n = 50_000, 10
	dir := testenv.Tmpfs(t)
	testenv.ManyFiles(t, dir, files)
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var ents []DirEntry
	var more bool
	alloc := testenv.BytesAllocated(func() { ents, more, err = d.ReadDirN(n) })
	if err != nil || len(ents) != n || !more {
		t.Fatalf("ReadDirN(%d) = %d entries, more %v, %v", n, len(ents), more, err)
	}
	t.Logf("ReadDirN(%d) of %d files: %d KiB allocated", n, files, alloc>>10)
	if alloc > 256<<10 {
		t.Errorf("ReadDirN(%d) of %d files allocated %d KiB: it read the whole directory", n, files, alloc>>10)
	}
}

// Next hands out every entry once across batches, then io.EOF.
func TestDirReaderBatches(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	testenv.ManyFiles(t, dir, 1000)
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	r, err := d.Reader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	seen := map[string]bool{}
	for {
		batch, err := r.Next(64)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(batch) > 64 {
			t.Fatalf("batch of %d, asked 64", len(batch))
		}
		for _, e := range batch {
			if seen[e.Name] {
				t.Fatalf("%s twice", e.Name)
			}
			seen[e.Name] = true
		}
	}
	if len(seen) != 1000 {
		t.Fatalf("saw %d entries, want 1000", len(seen))
	}
}
