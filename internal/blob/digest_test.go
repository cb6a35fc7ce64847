package blob_test

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/blob"
	"github.com/sbxdev/sbx/internal/blob/blobtest"
)

func TestParseDigest(t *testing.T) {
	t.Parallel()
	good := "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	if d, err := blob.ParseDigest(good); err != nil || d.Hex() != good[7:] || d.String() != good {
		t.Fatalf("ParseDigest(%q) = %q, %v", good, d, err)
	}
	for _, bad := range blobtest.InvalidDigests {
		if _, err := blob.ParseDigest(bad); !errors.Is(err, blob.ErrInvalidDigest) {
			t.Errorf("ParseDigest(%q) = %v, want ErrInvalidDigest", bad, err)
		}
	}
	long := "sha256:" + strings.Repeat("x", 1<<20)
	if _, err := blob.ParseDigest(long); err == nil || len(err.Error()) > 300 {
		t.Errorf("a 1 MiB digest gave an error of %d bytes; want it truncated", len(err.Error()))
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	d := blob.FromBytes([]byte("abc"))
	for _, tt := range []struct {
		name    string
		content string
		size    int64
		ok      bool
	}{
		{"matching, size known", "abc", 3, true},
		{"matching, size unknown", "abc", -1, true},
		{"other content", "abd", 3, false},
		{"short", "ab", 3, false},
		{"long", "abcd", 3, false},
		{"right digest, wrong size", "abc", 4, false},
	} {
		_, err := io.Copy(io.Discard, blob.Verify(strings.NewReader(tt.content), d, tt.size))
		if tt.ok != (err == nil) || (!tt.ok && !errors.Is(err, blob.ErrDigestMismatch)) {
			t.Errorf("%s: Verify = %v", tt.name, err)
		}
	}
}
