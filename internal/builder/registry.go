package builder

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/netguard"
)

// pullTransport is the HTTP transport of one pull: guarded dials, capped
// answers, and a byte budget shared by every blob of the image.
type pullTransport struct {
	base   http.RoundTripper
	blobs  atomic.Int64 // bytes left for blobs
	capped atomic.Bool  // an answer went over its cap
}

func (im *Images) transport() *pullTransport {
	dialer := im.cfg.Guard.Dialer(30 * time.Second)
	t := &pullTransport{base: &http.Transport{
		// No proxy: the guard checks the address dialled, which would be
		// the proxy's, and the proxy would reach anything.
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    15 * time.Second,
		ResponseHeaderTimeout:  time.Minute,
		MaxResponseHeaderBytes: 64 << 10,
		IdleConnTimeout:        30 * time.Second,
	}}
	t.blobs.Store(im.cfg.MaxBytes)
	return t
}

func (t *pullTransport) over() bool { return t.capped.Load() }

// RoundTrip caps the answer: blobs (and the storage a blob request was
// redirected to) share the image's budget, anything else gets maxMetaBytes.
func (t *pullTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body := &cappedBody{rc: resp.Body, left: maxMetaBytes, what: "answered", onOver: func() { t.capped.Store(true) }}
	if isBlobRequest(req) && resp.StatusCode/100 == 2 {
		body.budget = &t.blobs
	}
	resp.Body = body
	return resp, nil
}

// isBlobRequest reports whether req fetches a blob, or follows a redirect
// of a request that did.
func isBlobRequest(req *http.Request) bool {
	for r, hops := req, 0; r != nil && hops < 20; hops++ {
		if strings.Contains(r.URL.Path, "/blobs/") {
			return true
		}
		if r.Response == nil {
			return false
		}
		r = r.Response.Request
	}
	return false
}

// errTooBig ends the read of an answer over its cap.
var errTooBig = errors.New("answer larger than allowed")

// cappedBody stops reading past a limit: its own (left), or a budget
// shared with other bodies.
type cappedBody struct {
	rc     io.ReadCloser
	left   int64
	budget *atomic.Int64
	what   string
	over   bool
	onOver func()
}

func (c *cappedBody) Read(p []byte) (int, error) {
	left := c.left
	if c.budget != nil {
		left = c.budget.Load()
	}
	if left <= 0 {
		c.over = true
		if c.onOver != nil {
			c.onOver()
		}
		return 0, errTooBig
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := c.rc.Read(p)
	if c.budget != nil {
		c.budget.Add(-int64(n))
	} else {
		c.left -= int64(n)
	}
	return n, err
}

func (c *cappedBody) Close() error { return c.rc.Close() }

func (im *Images) tooLarge(ref string) error {
	return errdefs.Exhausted("pull image %s: it is larger than %d MiB; use a smaller image or raise the limit with sbx serve --registry-max-image", ref, im.cfg.MaxBytes>>20)
}

// pullError turns what went wrong in a pull into a message for the tenant
// that repeats nothing a registry said: its status code, and fixed text.
// The whole error goes to the server's log.
func (im *Images) pullError(ref string, r name.Reference, err error) error {
	im.log.Warn("image pull failed", "image", ref, "err", err)
	var de *netguard.DestinationError
	var te *transport.Error
	var dns *net.DNSError
	var op *net.OpError
	switch {
	case errors.As(err, &de):
		return errdefs.Invalid("pull image %s: %s", ref, de.Error())
	case errors.Is(err, errTooBig):
		return im.tooLarge(ref)
	case errors.As(err, &te):
		return errdefs.Invalid("pull image %s: the registry answered %d %s%s", ref, te.StatusCode, http.StatusText(te.StatusCode), statusHint(te.StatusCode))
	case errors.Is(err, context.DeadlineExceeded):
		return errdefs.Unavailable("pull image %s: the registry did not answer in time", ref)
	case errors.Is(err, context.Canceled):
		return errdefs.Unavailable("pull image %s: canceled", ref)
	case errors.As(err, &dns) && dns.Name == r.Context().RegistryStr():
		return errdefs.Invalid("pull image %s: cannot resolve the registry's name %s", ref, dns.Name)
	case errors.As(err, &dns):
		return errdefs.Invalid("pull image %s: the registry sent this server to a name it cannot resolve", ref)
	case errors.As(err, &op):
		return errdefs.Unavailable("pull image %s: cannot reach %s (%s)", ref, addrOf(op), op.Op)
	case strings.Contains(err.Error(), "realm"):
		// go-containerregistry's own check of the token realm (an IP
		// literal in a private range, a scheme it does not allow).
		return errdefs.Invalid("pull image %s: the registry sends this server to a token service (WWW-Authenticate realm) it must not reach", ref)
	}
	return errdefs.Invalid("pull image %s: the registry's answer is not an image this server can use (details are in the server's log)", ref)
}

func addrOf(op *net.OpError) string {
	if op.Addr != nil {
		return op.Addr.String()
	}
	return "the registry"
}

func statusHint(code int) string {
	switch code {
	case http.StatusUnauthorized, http.StatusForbidden:
		return ": access denied (a private image needs credentials in the server's ~/.docker/config.json)"
	case http.StatusNotFound:
		return ": no such image or tag"
	case http.StatusTooManyRequests:
		return ": rate limited; try again later"
	}
	return ""
}
