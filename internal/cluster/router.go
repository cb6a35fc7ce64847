package cluster

import (
	"context"
	"crypto/subtle"

	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/proxy"
	"github.com/sbxdev/sbx/internal/store"
)

// RouteTTL is how long an api replica remembers which node runs a
// sandbox. Short: a sandbox that moves (resumed elsewhere) is found again
// within it, and a 502 or a connection error from the node forgets it at
// once.
const RouteTTL = 3 * time.Second

// Router is the proxy.Router of an api replica: sandbox traffic goes to
// the proxy of the node that runs the sandbox, which forwards it to the
// sandbox as for a single box (waking a paused one, checking its traffic
// token). Requests are signed; the body streams through.
type Router struct {
	st     SandboxStore
	nodes  *Nodes
	signer *Signer
	tr     http.RoundTripper
	log    *slog.Logger
	now    func() time.Time
	stats  *Metrics // nil: failures not counted

	mu     sync.Mutex
	routes map[string]route // sandbox ID → its node

	tokMu   sync.Mutex
	tokens  []store.Sandbox // live sandboxes, for signed file URLs
	tokenAt time.Time
}

type route struct {
	base, node, team string
	until            time.Time
}

// NewRouter returns the api replica's sandbox-traffic router.
func NewRouter(st SandboxStore, nodes *Nodes, signer *Signer, log *slog.Logger) *Router {
	return &Router{st: st, nodes: nodes, signer: signer, tr: NodeTransport(), log: log, now: time.Now,
		routes: map[string]route{}}
}

var (
	_ proxy.Router       = (*Router)(nil)
	_ proxy.SignedRouter = (*Router)(nil)
)

// Route returns a transport to the node of sandbox id, if the sandbox is
// running or paused (the node resumes it when it auto-resumes).
func (rt *Router) Route(id string) (http.RoundTripper, bool) {
	now := rt.now()
	rt.mu.Lock()
	r, ok := rt.routes[id]
	rt.mu.Unlock()
	if !ok || now.After(r.until) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		sb, err := rt.st.Sandbox(ctx, id)
		if err != nil || sb.State == store.StateKilled {
			return nil, false
		}
		base, err := rt.nodes.URL(ctx, sb.NodeID)
		if err != nil {
			rt.log.Debug("sandbox traffic: no node to route to", "sandbox.id", id, "node", sb.NodeID, "err", err)
			return nil, false
		}
		r = route{base: base, node: sb.NodeID, team: sb.TeamID, until: now.Add(RouteTTL)}
		rt.mu.Lock()
		if len(rt.routes) > 100_000 {
			clear(rt.routes) // gone sandboxes' entries: start over
		}
		rt.routes[id] = r
		rt.mu.Unlock()
	}
	return forwarder{rt: rt, id: id, r: r}, true
}

// SetMetrics makes sandbox traffic that fails at a node counted.
func (rt *Router) SetMetrics(m *Metrics) { rt.stats = m }

// forget drops the route of id (its node said it does not have it, or
// could not be reached).
func (rt *Router) forget(id string) {
	rt.mu.Lock()
	delete(rt.routes, id)
	rt.mu.Unlock()
}

// forwarder sends one request to the node's proxy: routed by the
// E2b-Sandbox-Id/Port headers (however the client routed it: header, host
// name or signed URL), with the original Host, signed.
type forwarder struct {
	rt *Router
	id string
	r  route
}

func (f forwarder) RoundTrip(in *http.Request) (*http.Response, error) {
	base, err := url.Parse(f.r.base)
	if err != nil {
		return nil, err
	}
	out := in.Clone(in.Context())
	out.URL.Scheme, out.URL.Host = base.Scheme, base.Host
	port := in.Header.Get("X-Sbx-Port") // set by proxy.Serve for ports other than envd's
	if port == "" {
		port = strconv.Itoa(proxy.EnvdPort)
	}
	out.Header.Del("X-Sbx-Port")
	out.Header.Set(SandboxIDHeader, f.id)
	out.Header.Set(SandboxPortHeader, port)
	out.Header.Del(Header)
	// Signed for this node and this sandbox and port (the headers above).
	if err := f.rt.signer.Sign(out, f.r.node, ""); err != nil {
		return nil, err
	}
	resp, err := f.rt.tr.RoundTrip(out)
	if err != nil {
		f.rt.stats.forwardError(f.r.node)
		f.rt.forget(f.id)
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		f.rt.stats.forwardError(f.r.node) // not 502: the sandbox's own servers answer that too
	}
	if resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusUnauthorized {
		// The node does not run it (any more), or refused us: look again.
		f.rt.forget(f.id)
	}
	return resp, nil
}

// tokenTTL is how long the list of live sandboxes behind signed file URLs
// is reused; a signature that matches none reads it again (at most every
// tokenRetry).
const (
	tokenTTL   = 2 * time.Second
	tokenRetry = 200 * time.Millisecond
)

// SignedBy finds the live sandbox whose access token made signature.
func (rt *Router) SignedBy(signature string, sign func(token string) string) (string, bool) {
	rt.tokMu.Lock()
	defer rt.tokMu.Unlock()
	if id, ok := matchSignature(rt.tokens, signature, sign); ok && rt.now().Sub(rt.tokenAt) < tokenTTL {
		return id, true
	}
	if rt.now().Sub(rt.tokenAt) < tokenRetry {
		return "", false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sbs, err := rt.st.LiveSandboxes(ctx)
	if err != nil {
		rt.log.Warn("signed file URL: read the live sandboxes", "err", err)
		return "", false
	}
	rt.tokens, rt.tokenAt = sbs, rt.now()
	return matchSignature(rt.tokens, signature, sign)
}

func matchSignature(sbs []store.Sandbox, signature string, sign func(string) string) (string, bool) {
	for _, sb := range sbs {
		if sb.AccessToken == "" || sb.State == store.StateKilled {
			continue
		}
		if subtle.ConstantTimeCompare([]byte(sign(sb.AccessToken)), []byte(signature)) == 1 {
			return sb.ID, true
		}
	}
	return "", false
}
