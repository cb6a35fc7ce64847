// Package blobtest is the conformance suite every blob.Store passes:
// blobtest.Run(t, newStore) with a constructor that returns an empty store.
package blobtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/errdefs"
)

// Run runs the suite; newStore returns a fresh, empty store, closed by
// the suite.
func Run(t *testing.T, newStore func(t *testing.T) blob.Store) {
	open := func(t *testing.T) blob.Store {
		t.Helper()
		s := newStore(t)
		t.Cleanup(func() { s.Close() })
		return s
	}
	t.Run("PutOpenRoundTrip", func(t *testing.T) { testRoundTrip(t, open(t)) })
	t.Run("KnownDigests", func(t *testing.T) { testKnownDigests(t, open(t)) })
	t.Run("PutIsIdempotent", func(t *testing.T) { testIdempotent(t, open(t)) })
	t.Run("Missing", func(t *testing.T) { testMissing(t, open(t)) })
	t.Run("Delete", func(t *testing.T) { testDelete(t, open(t)) })
	t.Run("InvalidDigests", func(t *testing.T) { testInvalid(t, open(t)) })
	t.Run("FailedPutStoresNothing", func(t *testing.T) { testFailedPut(t, open(t)) })
	t.Run("ConcurrentPutsOfOneBlob", func(t *testing.T) { testConcurrent(t, open(t)) })
	t.Run("Large", func(t *testing.T) { testLarge(t, open(t)) })
	t.Run("List", func(t *testing.T) { testList(t, open(t)) })
	t.Run("Touch", func(t *testing.T) { testTouch(t, open(t)) })
}

// ListAll returns every blob s holds, by digest.
func ListAll(t testing.TB, s blob.Store) map[blob.Digest]blob.Info {
	t.Helper()
	out := map[blob.Digest]blob.Info{}
	if err := s.List(t.Context(), func(i blob.Info) error {
		if _, dup := out[i.Digest]; dup {
			t.Errorf("List gave %s twice", i.Digest)
		}
		out[i.Digest] = i
		return nil
	}); err != nil {
		t.Fatalf("List: %v", err)
	}
	return out
}

func testList(t *testing.T, s blob.Store) {
	if got := ListAll(t, s); len(got) != 0 {
		t.Fatalf("List of an empty store = %v", got)
	}
	before := time.Now().Add(-2 * time.Second) // S3 times are whole seconds
	want := map[blob.Digest]int64{}
	for i := range 5 {
		b := Random(t, 100*(i+1))
		want[MustPut(t, s, b)] = int64(len(b))
	}
	gone := MustPut(t, s, Random(t, 10))
	if err := s.Delete(t.Context(), gone); err != nil {
		t.Fatal(err)
	}
	got := ListAll(t, s)
	if len(got) != len(want) {
		t.Fatalf("List = %d blobs, want %d", len(got), len(want))
	}
	for d, n := range want {
		i, ok := got[d]
		if !ok || i.Size != n || i.ModTime.Before(before) || i.ModTime.After(time.Now().Add(time.Minute)) {
			t.Errorf("List entry of %s = %+v (present %v), want size %d, stored just now", d, i, ok, n)
		}
	}
	stop := errors.New("stop")
	calls := 0
	if err := s.List(t.Context(), func(blob.Info) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Errorf("List with a failing fn = %v after %d calls, want its error after 1", err, calls)
	}
}

func testTouch(t *testing.T, s blob.Store) {
	ctx := t.Context()
	data := Random(t, 100)
	d := MustPut(t, s, data)
	first, err := s.Stat(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // S3 times are whole seconds
	if err := s.Touch(ctx, d); err != nil {
		t.Fatalf("Touch: %v", err)
	}
	after, err := s.Stat(ctx, d)
	if err != nil || !after.ModTime.After(first.ModTime) || after.Size != first.Size {
		t.Fatalf("Stat after Touch = %+v, %v; want a later time than %v, same size", after, err, first.ModTime)
	}
	if !bytes.Equal(ReadAll(t, s, d), data) {
		t.Fatal("Touch changed the content")
	}
	// Storing content again renews its time too: garbage collection must
	// not take a blob a writer just stored again and is about to reference.
	time.Sleep(1100 * time.Millisecond)
	MustPut(t, s, data)
	if again, err := s.Stat(ctx, d); err != nil || !again.ModTime.After(after.ModTime) {
		t.Fatalf("Stat after a second Put = %+v, %v; want a later time than %v", again, err, after.ModTime)
	}
	missing := blob.FromBytes([]byte("never stored"))
	if err := s.Touch(ctx, missing); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Touch of a missing blob = %v, want ErrNotFound", err)
	}
	if err := s.Touch(ctx, blob.Digest("sha256:../x")); !errors.Is(err, blob.ErrInvalidDigest) {
		t.Errorf("Touch of an invalid digest = %v, want ErrInvalidDigest", err)
	}
}

// Random returns n random bytes.
func Random(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// MustPut stores b and checks the digest and size Put reports.
func MustPut(t testing.TB, s blob.Store, b []byte) blob.Digest {
	t.Helper()
	d, n, err := s.Put(t.Context(), bytes.NewReader(b))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	sum := sha256.Sum256(b)
	if want := blob.Digest("sha256:" + hex.EncodeToString(sum[:])); d != want || n != int64(len(b)) {
		t.Fatalf("Put = %s, %d bytes; want %s, %d", d, n, want, len(b))
	}
	return d
}

// ReadAll opens d and returns its content.
func ReadAll(t testing.TB, s blob.Store, d blob.Digest) []byte {
	t.Helper()
	rc, err := s.Open(t.Context(), d)
	if err != nil {
		t.Fatalf("Open %s: %v", d, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", d, err)
	}
	return b
}

func testRoundTrip(t *testing.T, s blob.Store) {
	ctx := t.Context()
	data := Random(t, 100_000)
	d := MustPut(t, s, data)
	if got := ReadAll(t, s, d); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, not what was put (%d)", len(got), len(data))
	}
	info, err := s.Stat(ctx, d)
	if err != nil || info.Size != int64(len(data)) || info.Digest != d {
		t.Fatalf("Stat = %+v, %v; want size %d", info, err, len(data))
	}
	if ok, err := s.Exists(ctx, d); !ok || err != nil {
		t.Fatalf("Exists = %v, %v after Put", ok, err)
	}
	// A reader checked with Verify agrees with the store.
	rc, err := s.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.Copy(io.Discard, blob.Verify(rc, d, info.Size)); err != nil {
		t.Fatalf("verified read: %v", err)
	}
}

func testKnownDigests(t *testing.T, s blob.Store) {
	for _, tt := range []struct{ content, digest string }{
		{"", "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	} {
		d, n, err := s.Put(t.Context(), strings.NewReader(tt.content))
		if err != nil || string(d) != tt.digest || n != int64(len(tt.content)) {
			t.Errorf("Put(%q) = %s, %d, %v; want %s", tt.content, d, n, err, tt.digest)
			continue
		}
		if got := ReadAll(t, s, d); string(got) != tt.content {
			t.Errorf("read back %q, want %q", got, tt.content)
		}
	}
}

func testIdempotent(t *testing.T, s blob.Store) {
	data := Random(t, 4096)
	d1 := MustPut(t, s, data)
	d2 := MustPut(t, s, data)
	if d1 != d2 || !bytes.Equal(ReadAll(t, s, d2), data) {
		t.Fatalf("second Put of the same content: %s then %s", d1, d2)
	}
}

func testMissing(t *testing.T, s blob.Store) {
	ctx := t.Context()
	d := blob.FromBytes([]byte("never stored"))
	if _, err := s.Open(ctx, d); !errors.Is(err, blob.ErrNotFound) || !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Open of a missing blob = %v, want ErrNotFound", err)
	}
	if _, err := s.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat of a missing blob = %v, want ErrNotFound", err)
	}
	if ok, err := s.Exists(ctx, d); ok || err != nil {
		t.Errorf("Exists of a missing blob = %v, %v", ok, err)
	}
	if err := s.Delete(ctx, d); err != nil {
		t.Errorf("Delete of a missing blob = %v, want nil", err)
	}
}

func testDelete(t *testing.T, s blob.Store) {
	ctx := t.Context()
	keep := MustPut(t, s, Random(t, 1000))
	gone := MustPut(t, s, Random(t, 1000))
	if err := s.Delete(ctx, gone); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if ok, err := s.Exists(ctx, gone); ok || err != nil {
		t.Fatalf("Exists after Delete = %v, %v", ok, err)
	}
	if _, err := s.Open(ctx, gone); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Open after Delete = %v, want ErrNotFound", err)
	}
	if ok, _ := s.Exists(ctx, keep); !ok {
		t.Fatal("Delete removed another blob")
	}
	// Put after Delete brings it back.
	data := Random(t, 10)
	d := MustPut(t, s, data)
	if err := s.Delete(ctx, d); err != nil {
		t.Fatal(err)
	}
	MustPut(t, s, data)
	if !bytes.Equal(ReadAll(t, s, d), data) {
		t.Fatal("Put after Delete did not restore the blob")
	}
}

// InvalidDigests are digests every method refuses before touching
// storage: traversal, wrong algorithm, case, length.
var InvalidDigests = []string{
	"",
	"sha256:",
	"sha256:../../../../etc/passwd",
	"sha256:" + strings.Repeat("a", 63),
	"sha256:" + strings.Repeat("a", 65),
	"sha256:" + strings.Repeat("A", 64),
	"sha256:" + strings.Repeat("a", 62) + "/x",
	"sha512:" + strings.Repeat("a", 64),
	"md5:d41d8cd98f00b204e9800998ecf8427e",
	strings.Repeat("a", 64),
	"sha256:" + strings.Repeat("a", 63) + "\x00",
}

func testInvalid(t *testing.T, s blob.Store) {
	ctx := t.Context()
	for _, bad := range InvalidDigests {
		d := blob.Digest(bad)
		check := func(op string, err error) {
			if !errors.Is(err, blob.ErrInvalidDigest) || !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("%s(%q) = %v, want ErrInvalidDigest", op, bad, err)
			}
		}
		_, err := s.Open(ctx, d)
		check("Open", err)
		_, err = s.Stat(ctx, d)
		check("Stat", err)
		_, err = s.Exists(ctx, d)
		check("Exists", err)
		check("Delete", s.Delete(ctx, d))
		if _, err := blob.ParseDigest(bad); !errors.Is(err, blob.ErrInvalidDigest) {
			t.Errorf("ParseDigest(%q) = %v", bad, err)
		}
	}
}

func testFailedPut(t *testing.T, s blob.Store) {
	data := Random(t, 50_000)
	boom := errors.New("reader broke")
	r := io.MultiReader(bytes.NewReader(data[:20_000]), iotest.ErrReader(boom))
	if _, _, err := s.Put(t.Context(), r); !errors.Is(err, boom) {
		t.Fatalf("Put of a failing reader = %v, want its error", err)
	}
	for _, part := range [][]byte{data[:20_000], data} {
		if ok, err := s.Exists(t.Context(), blob.FromBytes(part)); ok || err != nil {
			t.Fatalf("a failed Put left a blob (%v, %v)", ok, err)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := s.Put(ctx, bytes.NewReader(data)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with a cancelled context = %v", err)
	}
	if ok, _ := s.Exists(t.Context(), blob.FromBytes(data)); ok {
		t.Fatal("a cancelled Put stored the blob")
	}
}

func testConcurrent(t *testing.T, s blob.Store) {
	data := Random(t, 200_000)
	want := blob.FromBytes(data)
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			d, _, err := s.Put(t.Context(), bytes.NewReader(data))
			if err != nil || d != want {
				t.Errorf("concurrent Put = %s, %v", d, err)
			}
		})
	}
	wg.Wait()
	if !bytes.Equal(ReadAll(t, s, want), data) {
		t.Fatal("content after concurrent Puts differs")
	}
}

// testLarge puts a blob above the S3 backend's default 16 MiB part size
// (a multipart upload there) and streams it back.
func testLarge(t *testing.T, s blob.Store) {
	data := Random(t, 17<<20+123)
	d := MustPut(t, s, data)
	if got := ReadAll(t, s, d); !bytes.Equal(got, data) {
		t.Fatalf("large blob read back as %d bytes, want %d", len(got), len(data))
	}
}
