package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// S3Config is where an S3Store keeps its blobs.
type S3Config struct {
	Bucket string
	// Endpoint is the server's URL (http://127.0.0.1:8333 for a local
	// SeaweedFS, https://s3.eu-west-1.amazonaws.com, ...); empty means
	// AWS (s3.amazonaws.com). A custom endpoint is addressed path-style
	// (http://host/bucket/key), which every S3-compatible server accepts.
	Endpoint string
	Region   string
	// Prefix is put before every key ("sbx/" → sbx/blobs/sha256/...),
	// for a bucket shared with other data.
	Prefix string

	// Credentials; when AccessKey is empty they come from the
	// environment: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
	// AWS_SESSION_TOKEN, else MINIO_ACCESS_KEY / MINIO_SECRET_KEY.
	AccessKey    string
	SecretKey    string
	SessionToken string

	// SpoolDir holds a Put's content while its digest is computed
	// (default os.TempDir()); see S3Store.Put.
	SpoolDir string
	// PartSize is the multipart upload part size (default 16 MiB); a
	// blob larger than one part is uploaded in parts of this size.
	PartSize uint64
	// Transport overrides the HTTP transport (tests, proxies).
	Transport http.RoundTripper
}

// S3Store keeps blobs as objects PREFIX/blobs/sha256/<hex> in a bucket of
// an S3-compatible server. Keys are built only from validated digests:
// nothing a user sends becomes part of a key.
//
// It uses minio-go (github.com/minio/minio-go/v7): one module with few
// dependencies (aws-sdk-go-v2 needs a dozen modules for the same calls),
// path-style addressing and streaming multipart uploads built in, and
// maintained against S3-compatible servers as much as AWS itself.
type S3Store struct {
	c        *minio.Client
	bucket   string
	prefix   string
	spool    string
	partSize uint64
}

var _ Store = (*S3Store)(nil)

// NewS3Store connects to the bucket and checks that it exists.
func NewS3Store(ctx context.Context, cfg S3Config) (*S3Store, error) {
	if cfg.Bucket == "" {
		return nil, errdefs.Invalid("s3 blob store: a bucket is required (s3://BUCKET?endpoint=...)")
	}
	prefix, err := cleanPrefix(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	host, secure := "s3.amazonaws.com", true
	lookup := minio.BucketLookupAuto
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return nil, errdefs.Invalid("s3 blob store: endpoint %q must be http(s)://HOST[:PORT] with no path", cfg.Endpoint)
		}
		host, secure, lookup = u.Host, u.Scheme == "https", minio.BucketLookupPath
	}
	creds := credentials.NewChainCredentials([]credentials.Provider{&credentials.EnvAWS{}, &credentials.EnvMinio{}})
	if cfg.AccessKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)
	}
	c, err := minio.New(host, &minio.Options{
		Creds: creds, Secure: secure, Region: cfg.Region, BucketLookup: lookup, Transport: cfg.Transport,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 blob store: %w", err)
	}
	ok, err := c.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		if err := classify(cfg.Bucket, err); errors.Is(err, errdefs.ErrPermissionDenied) {
			return nil, err
		}
		return nil, errdefs.Wrap(errdefs.ErrUnavailable, err, "s3 blob store: cannot reach bucket %s at %s", cfg.Bucket, host)
	}
	if !ok {
		return nil, errdefs.Precondition("s3 blob store: bucket %s does not exist at %s; create it first", cfg.Bucket, host)
	}
	s := &S3Store{c: c, bucket: cfg.Bucket, prefix: prefix, spool: cfg.SpoolDir, partSize: cfg.PartSize}
	if s.partSize == 0 {
		s.partSize = 16 << 20
	}
	return s, nil
}

// cleanPrefix accepts a key prefix of plain path segments.
func cleanPrefix(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	p = strings.TrimSuffix(p, "/")
	for _, seg := range strings.Split(p, "/") {
		ok := seg != "" && seg != "." && seg != ".."
		for _, c := range seg {
			ok = ok && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.')
		}
		if !ok {
			return "", errdefs.Invalid("s3 blob store: prefix %q must be path segments of letters, digits, '-', '_' and '.'", p)
		}
	}
	return p + "/", nil
}

func (s *S3Store) key(d Digest) string { return s.prefix + "blobs/" + algorithm + "/" + d.Hex() }

// Close does nothing: the client holds no more than idle connections.
func (s *S3Store) Close() error { return nil }

// Put spools r to a local temporary file while hashing it, then uploads it
// under its digest, or skips the upload when the bucket already holds it.
// Spooling costs a local copy but means an object only ever appears under
// the digest of its content (no temporary keys in the bucket to clean up
// after a crash), identical content is never uploaded twice, and the
// upload has a known size (no buffering of whole parts in memory).
func (s *S3Store) Put(ctx context.Context, r io.Reader) (Digest, int64, error) {
	f, err := os.CreateTemp(s.spool, "sbx-blob-*")
	if err != nil {
		return "", 0, fmt.Errorf("put blob: spool: %w", err)
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	d, n, err := hashCopy(ctx, f, r)
	if err != nil {
		return "", 0, fmt.Errorf("put blob: %w", err)
	}
	// Content already stored is touched rather than uploaded again: the
	// caller is about to reference it (see Store.Touch).
	if err := s.Touch(ctx, d); err == nil {
		return d, n, nil
	} else if !errors.Is(err, ErrNotFound) {
		return "", 0, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", 0, fmt.Errorf("put blob %s: %w", d, err)
	}
	_, err = s.c.PutObject(ctx, s.bucket, s.key(d), f, n, minio.PutObjectOptions{
		ContentType: "application/octet-stream",
		PartSize:    s.partSize,
	})
	if err != nil {
		return "", 0, fmt.Errorf("put blob %s: %w", d, s.classify(err))
	}
	return d, n, nil
}

func (s *S3Store) classify(err error) error { return classify(s.bucket, err) }

// classify maps S3 error codes onto the blob and errdefs categories.
func classify(bucket string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	switch minio.ToErrorResponse(err).Code {
	case minio.NoSuchKey:
		return ErrNotFound
	case minio.NoSuchBucket:
		return errdefs.Wrap(errdefs.ErrFailedPrecondition, err, "bucket %s does not exist", bucket)
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch":
		return errdefs.Wrap(errdefs.ErrPermissionDenied, err, "access to bucket %s denied: check the blob store's credentials", bucket)
	}
	return err
}

// Open streams the object. The GET is made here, not at the first Read,
// so a missing blob fails Open with ErrNotFound.
func (s *S3Store) Open(ctx context.Context, d Digest) (io.ReadCloser, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	obj, err := s.c.GetObject(ctx, s.bucket, s.key(d), minio.GetObjectOptions{})
	if err == nil {
		_, err = obj.Stat()
	}
	if err != nil {
		if obj != nil {
			obj.Close()
		}
		return nil, fmt.Errorf("open blob %s: %w", d, s.classify(err))
	}
	return obj, nil
}

// Stat returns the object's size.
func (s *S3Store) Stat(ctx context.Context, d Digest) (Info, error) {
	if err := d.Validate(); err != nil {
		return Info{}, err
	}
	oi, err := s.c.StatObject(ctx, s.bucket, s.key(d), minio.StatObjectOptions{})
	if err != nil {
		return Info{}, fmt.Errorf("stat blob %s: %w", d, s.classify(err))
	}
	return Info{Digest: d, Size: oi.Size, ModTime: oi.LastModified.UTC()}, nil
}

// Exists reports whether the bucket holds the blob.
func (s *S3Store) Exists(ctx context.Context, d Digest) (bool, error) {
	_, err := s.Stat(ctx, d)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Delete removes the object; S3 answers a delete of a missing key with
// success, which is this interface's contract too.
func (s *S3Store) Delete(ctx context.Context, d Digest) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if err := s.c.RemoveObject(ctx, s.bucket, s.key(d), minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("delete blob %s: %w", d, s.classify(err))
	}
	return nil
}

// List lists the objects under PREFIX/blobs/sha256/.
func (s *S3Store) List(ctx context.Context, fn func(Info) error) error {
	dir := s.prefix + "blobs/" + algorithm + "/"
	for oi := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: dir, Recursive: true}) {
		if oi.Err != nil {
			return fmt.Errorf("list blobs: %w", s.classify(oi.Err))
		}
		d := Digest(prefix + strings.TrimPrefix(oi.Key, dir))
		if d.Validate() != nil {
			continue
		}
		if err := fn(Info{Digest: d, Size: oi.Size, ModTime: oi.LastModified.UTC()}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// maxCopySize is the largest object one server-side copy (CopyObject)
// may copy; larger ones are copied in parts (ComposeObject).
const maxCopySize = 5 << 30

// Touch copies the object onto itself with new metadata: S3 has no other
// way to renew an object's LastModified. The copy is server-side: no
// content passes through this process.
func (s *S3Store) Touch(ctx context.Context, d Digest) error {
	info, err := s.Stat(ctx, d)
	if err != nil {
		return err
	}
	src := minio.CopySrcOptions{Bucket: s.bucket, Object: s.key(d)}
	dst := minio.CopyDestOptions{Bucket: s.bucket, Object: s.key(d), ReplaceMetadata: true,
		UserMetadata: map[string]string{"Sbx-Touched": time.Now().UTC().Format(time.RFC3339Nano)}}
	if info.Size > maxCopySize {
		_, err = s.c.ComposeObject(ctx, dst, src)
	} else {
		_, err = s.c.CopyObject(ctx, dst, src)
	}
	if err != nil {
		return fmt.Errorf("touch blob %s: %w", d, s.classify(err))
	}
	return nil
}
