package sandbox

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestReplaceFile: the new content arrives by a rename, so a torn
// temporary file from a killed server is never read, and another name for
// the old file (a hard link, as a reader holding it open would see) keeps
// the old content instead of a half-written one.
func TestReplaceFile(t *testing.T) {
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
	if err := replaceFile(p, []byte(`{"new":2}`), 0o640); err != nil {
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

// TestReplaceFileConcurrentWriters: writers of one file (a pause marker
// and an egress update of the same sandbox) each leave a whole file, never
// fail for the other's temporary file, and a reader meanwhile sees one
// writer's content whole. With one temporary name for all, a writer
// removed or renamed away the other's half-written file.
func TestReplaceFileConcurrentWriters(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "paused.json")
	const writers, rounds, size = 8, 40, 64 << 10
	whole := func(b []byte) bool {
		return len(b) == size && bytes.Count(b, b[:1]) == size
	}
	if err := replaceFile(p, bytes.Repeat([]byte{'0'}, size), 0o600); err != nil {
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
				if err := replaceFile(p, data, 0o600); err != nil {
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
		t.Errorf("replaceFile: %v", err)
	}
	if len(torn) > 0 {
		t.Errorf("%d reads saw a torn file, first %s", len(torn), torn[0])
	}
	if b, err := os.ReadFile(p); err != nil || !whole(b) {
		t.Errorf("final file: %d bytes, %v", len(b), err)
	}
	assertNoTemps(t, dir, "paused.json")
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
