package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestWrite: the new content arrives by a rename, so a torn
// temporary file from a killed server is never read, and another name for
// the old file (a hard link, as a reader holding it open would see) keeps
// the old content instead of a half-written one.
func TestWrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "lifecycle.json")
	if err := os.WriteFile(p, []byte(`{"old":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(p, p+".held"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p+".tmp", []byte(`{"torn`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte(`{"new":2}`), 0o640); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{p: `{"new":2}`, p + ".held": `{"old":1}`} {
		if b, err := os.ReadFile(name); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", filepath.Base(name), b, err, want)
		}
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, %v; want 0640", fi.Mode(), err)
	}
	assertNoTemps(t, dir, "lifecycle.json", "lifecycle.json.held", "lifecycle.json.tmp")
}

// TestConcurrentWriters: writers of one file (a pause marker and an egress
// update of the same sandbox, two policy updates) each leave a whole file,
// never fail for the other's temporary file, and a reader meanwhile sees
// one writer's content whole, durable or not. With one temporary name for
// all (path + ".tmp"), a writer removed or renamed away the other's
// half-written file.
func TestConcurrentWriters(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		write func(string, []byte, os.FileMode) error
	}{{"durable", Write}, {"volatile", WriteVolatile}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			concurrentWriters(t, tc.write)
		})
	}
}

func concurrentWriters(t *testing.T, write func(string, []byte, os.FileMode) error) {
	dir := t.TempDir()
	p := filepath.Join(dir, "paused.json")
	const writers, rounds, size = 8, 40, 64 << 10
	whole := func(b []byte) bool {
		return len(b) == size && bytes.Count(b, b[:1]) == size
	}
	if err := write(p, bytes.Repeat([]byte{'0'}, size), 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var torn []string
	var readerWG sync.WaitGroup
	readerWG.Add(1)
	go func() {
		defer readerWG.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if b, err := os.ReadFile(p); err != nil || !whole(b) {
				torn = append(torn, fmt.Sprintf("%d bytes, %v", len(b), err))
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, writers*rounds)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := bytes.Repeat([]byte{byte('a' + w)}, size)
			for range rounds {
				if err := write(p, data, 0o600); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	readerWG.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("write: %v", err)
	}
	if len(torn) > 0 {
		t.Errorf("%d reads saw a torn file, first %s", len(torn), torn[0])
	}
	if b, err := os.ReadFile(p); err != nil || !whole(b) {
		t.Errorf("final file: %d bytes, %v", len(b), err)
	}
	assertNoTemps(t, dir, "paused.json")
}

// TestWriteFuncFailing: a write that fails changes nothing at the path
// and leaves no temporary file (an image archive cut short, a copy whose
// source went away).
func TestWriteFuncFailing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "image.tar")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := WriteFunc(p, 0o644, func(w io.Writer) error {
		_, _ = w.Write([]byte("half"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("err = %v, want it to wrap the writer's", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Errorf("file holds %q after a failed write, want old", b)
	}
	assertNoTemps(t, dir, "image.tar")
}

// assertNoTemps fails when dir holds other names than want.
func assertNoTemps(t *testing.T, dir string, want ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("dir holds %q, want %q (a temporary file left behind?)", got, want)
	}
}

// BenchmarkWrite is what the syncs cost for a small file (a boot ID), on
// the file system t.TempDir is on (run it where the data dir is).
func BenchmarkWrite(b *testing.B) {
	for _, bc := range []struct {
		name  string
		write func(string, []byte, os.FileMode) error
	}{{"durable", Write}, {"volatile", WriteVolatile}} {
		b.Run(bc.name, func(b *testing.B) {
			p := filepath.Join(b.TempDir(), "boot_id")
			for b.Loop() {
				if err := bc.write(p, []byte("0f8fad5b-d9cb-469f-a165-70867728950e\n"), 0o444); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
