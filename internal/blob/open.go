package blob

import (
	"context"
	"net/url"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// Options is what a store URL does not carry: secrets (never in a URL,
// which ends up in process lists, logs and unit files) and local paths.
type Options struct {
	S3AccessKey    string // default: the environment, see S3Config
	S3SecretKey    string
	S3SessionToken string
	SpoolDir       string // S3 only; see S3Config.SpoolDir
}

// URL forms Open accepts, for messages and --help.
const URLForms = "file:///ABSOLUTE/DIR or s3://BUCKET[?endpoint=http://HOST:PORT&region=REGION&prefix=PATH]"

// Open returns the store a --blob-store URL names:
//
//	file:///var/lib/sbx/blobs
//	s3://sbx-blobs?endpoint=http://127.0.0.1:8333&region=us-east-1&prefix=prod
//
// An unknown scheme or parameter, or credentials in the URL, are refused
// with an error that says what is accepted.
func Open(ctx context.Context, rawURL string, opts Options) (Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, errdefs.Invalid("blob store URL %q: %v; want %s", rawURL, err, URLForms)
	}
	if u.User != nil {
		return nil, errdefs.Invalid("blob store URL must not carry credentials (they would show in process lists and logs): pass them by flag or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" || !filepath.IsAbs(u.Path) || u.RawQuery != "" {
			return nil, errdefs.Invalid("blob store URL %q: want file:///ABSOLUTE/DIR (three slashes, no query)", rawURL)
		}
		return NewFileStore(filepath.Clean(u.Path))
	case "s3":
		q := u.Query()
		known := []string{"endpoint", "region", "prefix"}
		for k, v := range q {
			if !slices.Contains(known, k) {
				return nil, errdefs.Invalid("blob store URL %q: unknown parameter %q (known: %s)", rawURL, k, strings.Join(known, ", "))
			}
			if len(v) != 1 {
				return nil, errdefs.Invalid("blob store URL %q: parameter %q given %d times", rawURL, k, len(v))
			}
		}
		if u.Path != "" && u.Path != "/" {
			return nil, errdefs.Invalid("blob store URL %q: put a key prefix in ?prefix=, not in the path", rawURL)
		}
		return NewS3Store(ctx, S3Config{
			Bucket: u.Host, Endpoint: q.Get("endpoint"), Region: q.Get("region"), Prefix: q.Get("prefix"),
			AccessKey: opts.S3AccessKey, SecretKey: opts.S3SecretKey, SessionToken: opts.S3SessionToken,
			SpoolDir: opts.SpoolDir,
		})
	default:
		return nil, errdefs.Invalid("blob store URL %q: unknown scheme %q; want %s", rawURL, u.Scheme, URLForms)
	}
}
