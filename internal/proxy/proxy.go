// Package proxy routes sandbox traffic that arrives on the control-plane
// listener to the right sandbox, as E2B's client-proxy does: by the
// E2b-Sandbox-Id / E2b-Sandbox-Port headers, or by a host of the form
// <port>-<sandboxID>.<domain>.
package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/attribute"

	"github.com/sbxdev/sbx/internal/telemetry"
)

// EnvdPort is the port of the in-sandbox agent.
const EnvdPort = 49983

// maxBuffered is the largest request body read into memory before forwarding.
const maxBuffered = 1 << 20

var sandboxID = regexp.MustCompile(`^[a-z0-9]+$`)

// Router finds the transport to a running sandbox's agent.
type Router interface {
	Route(id string) (http.RoundTripper, bool)
}

// Waker is implemented by routers that can resume a paused sandbox for
// the traffic that found it paused (E2B's autoResume). Wake blocks until
// the sandbox runs (true) or will not (false: not found, not paused with
// autoResume, the resume failed, or ctx ended).
type Waker interface {
	Wake(ctx context.Context, id string) bool
}

// SignedRouter finds the sandbox whose access token signed a file URL.
type SignedRouter interface {
	// SignedBy returns the ID of the running sandbox for which sign(token)
	// equals signature.
	SignedBy(signature string, sign func(token string) string) (string, bool)
}

// Proxy forwards requests to sandboxes.
type Proxy struct {
	router Router
	domain string
	log    *slog.Logger
	// behindAPI: the traffic comes from an api replica (a cluster node),
	// which decides the response's origin policy itself.
	behindAPI bool
	rp        *httputil.ReverseProxy // shared by every request
}

// New returns a proxy. domain enables host routing when not empty.
func New(router Router, domain string, log *slog.Logger) *Proxy {
	p := &Proxy{router: router, domain: strings.TrimPrefix(domain, "."), log: log}
	p.rp = p.newReverseProxy()
	return p
}

// SetBehindAPI says the proxy serves a cluster node, whose sandbox traffic
// comes through api replicas: the replica's own proxy, which saw how the
// client routed the request, sets the origin headers of the response.
func (p *Proxy) SetBehindAPI() { p.behindAPI = true }

// ClusterAuthHeader carries an api replica's signature on the requests it
// sends a node (internal/cluster.Header, defined here because cluster
// imports this package). Serve never forwards it to a sandbox.
const ClusterAuthHeader = "X-Sbx-Cluster-Auth"

// Target is where a request should go.
type Target struct {
	SandboxID string
	Port      int
}

// Match tells whether r is sandbox traffic and where it goes.
func (p *Proxy) Match(r *http.Request) (Target, bool, error) {
	id, port := r.Header.Get("E2b-Sandbox-Id"), r.Header.Get("E2b-Sandbox-Port")
	if id != "" || port != "" {
		if id == "" || port == "" {
			return Target{}, true, errors.New("both E2b-Sandbox-Id and E2b-Sandbox-Port headers are required")
		}
		return parseTarget(id, port)
	}
	if t, ok := p.matchSigned(r); ok {
		return t, true, nil
	}
	if p.domain == "" {
		return Target{}, false, nil
	}
	host := r.Host
	if h, _, ok := strings.Cut(host, ":"); ok {
		host = h
	}
	suffix := "." + p.domain
	if !strings.HasSuffix(host, suffix) {
		return Target{}, false, nil
	}
	label := strings.TrimSuffix(host, suffix)
	portStr, id, ok := strings.Cut(label, "-")
	if !ok || strings.Contains(label, ".") {
		return Target{}, false, nil
	}
	return parseTarget(id, portStr)
}

func parseTarget(id, port string) (Target, bool, error) {
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return Target{}, true, errors.New("invalid sandbox port " + strconv.Quote(port))
	}
	if !sandboxID.MatchString(id) {
		return Target{}, true, errors.New("invalid sandbox ID")
	}
	return Target{SandboxID: id, Port: int(n)}, true, nil
}

// Serve forwards r to t.
func (p *Proxy) Serve(w http.ResponseWriter, r *http.Request, t Target) {
	tr, ok := p.router.Route(t.SandboxID)
	if w, canWake := p.router.(Waker); !ok && canWake && w.Wake(r.Context(), t.SandboxID) {
		tr, ok = p.router.Route(t.SandboxID)
	}
	if !ok {
		telemetry.SetError(r.Context(), errNoSandbox)
		notFound(w, t.SandboxID)
		return
	}
	if t.Port == EnvdPort && r.URL.Path == "/init" {
		// Internal agent endpoints are never reachable from outside.
		http.NotFound(w, r)
		return
	}
	if r.ContentLength > 0 && r.ContentLength <= maxBuffered {
		// Read small bodies (every RPC) before forwarding. Otherwise the
		// transport's writer may still be reading the inbound body when
		// a fast reply has already ended the handler, and the server then
		// reads the keep-alive connection's next request from under it,
		// which cancels a later stream on that connection at random.
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBuffered))
		if err != nil {
			return // the client went away
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	if dr, ok := p.router.(DirectRouter); ok && t.Port != EnvdPort && (r.ContentLength == 0 || r.GetBody != nil) {
		if ip, iface, ok := dr.DirectPath(t.SandboxID); ok {
			tr = withFallback{id: t.SandboxID, agent: tr, port: t.Port,
				target: directTarget{addr: netip.AddrPortFrom(ip, uint16(t.Port)), iface: iface}}
		}
	}
	// Streams may answer while the request body still flows; let both run.
	_ = http.NewResponseController(w).EnableFullDuplex()
	ctx, span := telemetry.Start(r.Context(), "proxy.forward", attribute.String("sandbox.id", t.SandboxID),
		attribute.Int("sandbox.port", t.Port))
	defer span.End()
	f := &forward{tr: tr, t: t, sandboxed: !p.behindAPI && !p.hostRouted(r)}
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(ctx, forwardKey{}, f)))
}

// forward is what the shared ReverseProxy needs to know of one request,
// carried in its context: the transport to its sandbox, where it goes, and
// whether the answer is sandboxed by CSP.
type forward struct {
	tr        http.RoundTripper
	t         Target
	sandboxed bool
}

type forwardKey struct{}

func forwardOf(ctx context.Context) *forward { return ctx.Value(forwardKey{}).(*forward) }

// viaForward sends each request by the transport its forward names, and
// sandboxes the answer when the forward says so. Done here rather than in
// ModifyResponse, which sees only the response: the request a sandbox
// transport puts in it is its own.
type viaForward struct{}

func (viaForward) RoundTrip(r *http.Request) (*http.Response, error) {
	f := forwardOf(r.Context())
	resp, err := f.tr.RoundTrip(r)
	if err == nil && f.sandboxed {
		// Answered on the control plane's own origin (routed by header or
		// by a signed file URL), which also serves the dashboard: a
		// sandbox's file opened in a browser (an .html download is served
		// inline) must not run as that origin and ride the dashboard's
		// session. A sandboxed CSP gives it an opaque origin of its own.
		resp.Header.Set("Content-Security-Policy", "sandbox")
		resp.Header.Set("X-Content-Type-Options", "nosniff")
	}
	return resp, err
}

// copyBuffers lends the ReverseProxy its 32 KiB copy buffers: otherwise
// each forwarded request allocates one, the bulk of what a small RPC costs
// the server in garbage.
type copyBuffers struct{}

var copyBufferPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (copyBuffers) Get() []byte { return *copyBufferPool.Get().(*[]byte) }

func (copyBuffers) Put(b []byte) { copyBufferPool.Put(&b) }

// newReverseProxy builds the one ReverseProxy every request goes through
// (built per request it cost a handful of allocations and a logger each);
// what differs per request comes from its forward.
func (p *Proxy) newReverseProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Transport:     viaForward{},
		FlushInterval: -1,
		BufferPool:    copyBuffers{},
		ErrorLog:      slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		Rewrite: func(pr *httputil.ProxyRequest) {
			t := forwardOf(pr.In.Context()).t
			pr.SetURL(&url.URL{Scheme: "http", Host: "sandbox"})
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Del("X-Sbx-Port")
			if t.Port != EnvdPort {
				pr.Out.Header.Set("X-Sbx-Port", strconv.Itoa(t.Port))
			}
			pr.Out.Header.Del("X-Forwarded-For")
			// A node's traffic comes signed by an api replica; code in the
			// sandbox must never see that signature (it could replay it to
			// another node, whose nonces are its own).
			pr.Out.Header.Del(ClusterAuthHeader)
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client went away
			}
			t := forwardOf(r.Context()).t
			telemetry.SetError(r.Context(), err)
			p.log.DebugContext(r.Context(), "proxy to sandbox failed", "sandbox.id", t.SandboxID, "port", t.Port, "err", err)
			notFound(w, t.SandboxID)
		},
	}
}

// errNoSandbox is what the access log says of traffic to a sandbox that
// is not running here.
var errNoSandbox = errors.New("no such sandbox running")

// notFound answers like E2B's proxy for a sandbox that does not exist (any
// more): SDKs read 502 as "the sandbox was killed or timed out".
func notFound(w http.ResponseWriter, id string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadGateway)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"sandboxId": id, "message": "The sandbox was not found", "code": http.StatusBadGateway,
	})
}

// BadRequest answers a malformed sandbox-routing request.
func BadRequest(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": http.StatusBadRequest, "message": err.Error()})
}

// matchSigned routes E2B's signed file URLs (uploadUrl/downloadUrl), which
// carry neither routing headers nor a sandbox host: the sandbox is the one
// whose access token produced the signature (protocol doc §3.6). envd checks
// the signature and its expiry again.
func (p *Proxy) matchSigned(r *http.Request) (Target, bool) {
	sr, ok := p.router.(SignedRouter)
	if !ok || r.URL.Path != "/files" {
		return Target{}, false
	}
	q := r.URL.Query()
	sig := q.Get("signature")
	if !strings.HasPrefix(sig, "v1_") {
		return Target{}, false
	}
	op := "read"
	if r.Method == http.MethodPost || r.Method == http.MethodPut {
		op = "write"
	}
	raw := q.Get("path") + ":" + op + ":" + q.Get("username") + ":"
	exp := q.Get("signature_expiration")
	id, ok := sr.SignedBy(sig, func(token string) string {
		s := raw + token
		if exp != "" {
			s += ":" + exp
		}
		sum := sha256.Sum256([]byte(s))
		return "v1_" + base64.RawStdEncoding.EncodeToString(sum[:])
	})
	if !ok {
		return Target{}, false
	}
	return Target{SandboxID: id, Port: EnvdPort}, true
}

// hostRouted tells whether r came to a sandbox's own host name
// (<port>-<id>.<domain>), a different origin from the control plane's.
func (p *Proxy) hostRouted(r *http.Request) bool {
	if p.domain == "" {
		return false
	}
	host := r.Host
	if h, _, ok := strings.Cut(host, ":"); ok {
		host = h
	}
	return strings.HasSuffix(host, "."+p.domain)
}
