package proxy

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"
)

// DirectRouter is implemented by routers that know a sandbox's address on
// the host bridge. Requests for ports other than the agent's then go
// straight to the sandbox, one hop instead of two through the agent's
// forwarder — the code interpreter's round trips are dominated by hops.
type DirectRouter interface {
	Address(id string) (netip.Addr, bool)
}

// directTransport is shared by every sandbox: connections are pooled per
// sandbox address and port.
var directTransport = &http.Transport{
	DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
	MaxIdleConnsPerHost: 32,
	IdleConnTimeout:     30 * time.Second,
	DisableCompression:  true,
}

// withFallback tries the sandbox's address first and falls back to the
// agent's forwarder when nothing answers there: a server bound to the
// sandbox's loopback only is reachable through the agent, which dials
// 127.0.0.1 inside. A dial error happens before any byte is sent, so the
// request (whose body is buffered) can be replayed.
type withFallback struct {
	addr  string // ip:port of the service on the bridge
	agent http.RoundTripper
	port  int
}

func (f withFallback) RoundTrip(r *http.Request) (*http.Response, error) {
	direct := r.Clone(r.Context())
	direct.URL.Host = f.addr
	direct.Header.Del("X-Sbx-Port")
	resp, err := directTransport.RoundTrip(direct)
	var op *net.OpError
	if err == nil || !errors.As(err, &op) || op.Op != "dial" {
		return resp, err
	}
	if r.GetBody != nil {
		body, gerr := r.GetBody()
		if gerr != nil {
			return nil, err
		}
		r.Body = body
	}
	r.Header.Set("X-Sbx-Port", strconv.Itoa(f.port))
	return f.agent.RoundTrip(r)
}
