package sdk

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ErrNoDomain is returned by Sandbox.Host when neither the server nor
// Config.Domain names a sandbox domain: such a server routes sandbox
// traffic by headers only (use Sandbox.NewPortRequest).
var ErrNoDomain = errors.New("no sandbox domain: the server routes by headers only (start it with --domain, set E2B_DOMAIN, or use Sandbox.NewPortRequest)")

// Host returns the host name that reaches port inside the sandbox,
// "<port>-<sandboxID>.<domain>", as E2B's getHost does. Prepend the scheme
// the server serves (https behind TLS).
func (s *Sandbox) Host(port int) (string, error) {
	if port <= 0 || port > 65535 {
		return "", fmt.Errorf("port %d: want 1-65535", port)
	}
	if s.Domain == "" {
		return "", ErrNoDomain
	}
	return strconv.Itoa(port) + "-" + s.ID + "." + s.Domain, nil
}

// NewPortRequest returns a request to path on port inside the sandbox
// through the sandbox URL, with the routing headers and access token set:
// it works with or without a sandbox domain.
func (s *Sandbox) NewPortRequest(ctx context.Context, method string, port int, path string, body io.Reader) (*http.Request, error) {
	if port <= 0 || port > 65535 {
		return nil, fmt.Errorf("port %d: want 1-65535", port)
	}
	p, q, _ := strings.Cut(path, "?")
	return s.newRequest(ctx, method, port, p, q, body)
}

// FileURLOptions configures a signed file URL.
type FileURLOptions struct {
	// User is the Linux user the file is read or written as; empty means
	// the sandbox default.
	User string
	// Expires, when > 0, makes the URL stop working after that long.
	Expires time.Duration
}

// DownloadURL returns a URL that anyone can GET the file at path with,
// without headers or keys, as E2B's downloadUrl does: it is signed with
// the sandbox's access token. The sandbox must be secured (have a token).
func (f *Files) DownloadURL(path string, opts FileURLOptions) (string, error) {
	return f.signedURL(path, "read", opts)
}

// UploadURL returns a URL that anyone can POST a multipart file (field
// "file") to, writing path, as E2B's uploadUrl does.
func (f *Files) UploadURL(path string, opts FileURLOptions) (string, error) {
	return f.signedURL(path, "write", opts)
}

func (f *Files) signedURL(path, operation string, opts FileURLOptions) (string, error) {
	s := f.sbx
	if s.EnvdAccessToken == "" {
		return "", fmt.Errorf("sign a URL for %s: the sandbox has no access token (only secured sandboxes can sign URLs)", path)
	}
	user := opts.User
	if user == "" {
		user = f.user
	}
	raw := path + ":" + operation + ":" + user + ":" + s.EnvdAccessToken
	q := url.Values{"path": {path}}
	if user != "" {
		q.Set("username", user)
	}
	if opts.Expires > 0 {
		exp := strconv.FormatInt(time.Now().Add(opts.Expires).Unix(), 10)
		raw += ":" + exp
		q.Set("signature_expiration", exp)
	}
	sum := sha256.Sum256([]byte(raw))
	q.Set("signature", "v1_"+base64.RawStdEncoding.EncodeToString(sum[:]))
	// No sandbox ID: the server finds the sandbox by the signature, and
	// whoever receives the URL needs nothing else.
	u := *s.client.sandboxURL
	u.Path = "/files"
	u.RawQuery = q.Encode()
	return u.String(), nil
}
