// Package blob is sbx's content-addressed blob store: templates' layers,
// snapshots, checkpoints and uploads, named by the sha256 of their content,
// so a name can be checked against what it names and the same content is
// stored once.
//
// A Store is a directory for one box (file:///dir) or an S3-compatible
// bucket for a cluster (s3://bucket?endpoint=...); Open picks one by URL.
// Nodes read blobs through a Cache, which fetches a blob on first use into
// a node-local directory (one download however many ask at once), checks
// it against its digest before anyone sees it, and evicts the least
// recently used under a size bound.
package blob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"time"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// Digest names a blob: "sha256:" and 64 lowercase hex digits.
type Digest string

const (
	algorithm = "sha256"
	prefix    = algorithm + ":"
	hexLen    = 2 * sha256.Size
)

// ErrInvalidDigest is wrapped by every error about a malformed digest; it
// is an errdefs.ErrInvalidArgument.
var ErrInvalidDigest = fmt.Errorf("invalid blob digest (want sha256:<64 lowercase hex digits>): %w", errdefs.ErrInvalidArgument)

// ErrNotFound is returned (wrapped) for a blob the store does not hold; it
// is an errdefs.ErrNotFound.
var ErrNotFound = fmt.Errorf("blob %w", errdefs.ErrNotFound)

// ErrDigestMismatch is returned when content does not hash to the digest
// it was fetched or stored under: corruption in transit or at rest, or a
// store that returned the wrong object.
var ErrDigestMismatch = errors.New("blob content does not match its digest")

// ParseDigest checks s and returns it as a Digest. Only a valid digest
// ever becomes part of a file path or an object key.
func ParseDigest(s string) (Digest, error) {
	d := Digest(s)
	if err := d.Validate(); err != nil {
		return "", err
	}
	return d, nil
}

// Validate reports whether d is well formed.
func (d Digest) Validate() error {
	s := string(d)
	if !strings.HasPrefix(s, prefix) || len(s) != len(prefix)+hexLen {
		return fmt.Errorf("%q: %w", truncate(s), ErrInvalidDigest)
	}
	for _, c := range s[len(prefix):] {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("%q: %w", truncate(s), ErrInvalidDigest)
		}
	}
	return nil
}

// truncate keeps an error about a hostile digest from echoing megabytes.
func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// Hex is the digest's hex part; d must be valid.
func (d Digest) Hex() string { return string(d)[len(prefix):] }

func (d Digest) String() string { return string(d) }

// FromBytes is the digest of b.
func FromBytes(b []byte) Digest {
	sum := sha256.Sum256(b)
	return Digest(prefix + hex.EncodeToString(sum[:]))
}

// Info describes a stored blob.
type Info struct {
	Digest Digest
	Size   int64
	// ModTime is when the blob was last stored or touched (Touch), to
	// the store's precision (S3: whole seconds); set by List and Stat.
	ModTime time.Time
}

// Store holds blobs by digest. Every method validates the digest first
// (ErrInvalidDigest) and honours ctx. Implementations are safe for
// concurrent use, and several processes may share one store: content
// addressing makes concurrent writes of one blob agree.
type Store interface {
	// Put stores all of r and returns its digest and size. Storing
	// content the store already holds succeeds with the same digest. A
	// failed Put leaves nothing under any digest.
	Put(ctx context.Context, r io.Reader) (Digest, int64, error)
	// Open streams the blob. It fails with ErrNotFound if the store does
	// not hold it. The stream is the stored bytes, not re-verified: a
	// reader that must trust them uses Verify (the Cache does).
	Open(ctx context.Context, d Digest) (io.ReadCloser, error)
	// Stat describes the blob, or fails with ErrNotFound.
	Stat(ctx context.Context, d Digest) (Info, error)
	// Exists reports whether the store holds the blob.
	Exists(ctx context.Context, d Digest) (bool, error)
	// Delete removes the blob; deleting a blob the store does not hold
	// is not an error (garbage collection may race another deleter).
	Delete(ctx context.Context, d Digest) error
	// List calls fn with every blob the store holds, in no set order,
	// until fn returns an error (which List returns). Entries that are
	// not blobs (a stray file, an object under another key) are skipped.
	List(ctx context.Context, fn func(Info) error) error
	// Touch marks the blob as just stored (its ModTime becomes now), or
	// fails with ErrNotFound. A writer that reuses a blob already in the
	// store, instead of storing it, touches it first: garbage collection
	// spares blobs stored or touched within its grace period, so one it
	// found unreferenced a moment before is not deleted under the writer
	// recording its reference.
	Touch(ctx context.Context, d Digest) error
	// Close releases what the store holds open.
	Close() error
}

// Verify wraps r so that reading it to the end fails with
// ErrDigestMismatch unless the content hashes to d (and is size bytes
// long, when size >= 0). Bytes are passed on as they are read: a caller
// must not act on them before EOF.
func Verify(r io.Reader, d Digest, size int64) io.Reader {
	return &verifier{r: r, want: d, size: size, h: sha256.New()}
}

type verifier struct {
	r    io.Reader
	want Digest
	size int64
	n    int64
	h    hash.Hash
}

func (v *verifier) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.size >= 0 && v.n > v.size {
		return n, fmt.Errorf("%w: %s is longer than its %d bytes", ErrDigestMismatch, v.want, v.size)
	}
	if errors.Is(err, io.EOF) {
		if v.size >= 0 && v.n != v.size {
			return n, fmt.Errorf("%w: %s: got %d bytes, want %d", ErrDigestMismatch, v.want, v.n, v.size)
		}
		if got := Digest(prefix + hex.EncodeToString(v.h.Sum(nil))); got != v.want {
			return n, fmt.Errorf("%w: want %s, content is %s", ErrDigestMismatch, v.want, got)
		}
	}
	return n, err
}

// ctxReader stops a copy when ctx ends: a Put of a slow or endless reader
// must not outlive its request.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// hashCopy copies r to w, returning the content's digest and size.
func hashCopy(ctx context.Context, w io.Writer, r io.Reader) (Digest, int64, error) {
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), ctxReader{ctx, r})
	if err != nil {
		return "", n, err
	}
	return Digest(prefix + hex.EncodeToString(h.Sum(nil))), n, nil
}
