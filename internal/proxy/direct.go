package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DirectRouter is implemented by routers that can reach a sandbox's ports
// straight from the host. Requests for ports other than the agent's then
// go to the sandbox in one hop instead of two through the agent's
// forwarder — the code interpreter's round trips are dominated by hops.
//
// They go in plaintext (the code interpreter's X-Access-Token included),
// which is only acceptable because the interface leads to that sandbox and
// nothing else (internal/network: one point-to-point veth per sandbox, no
// shared segment). Every connection is bound to that interface, so a
// packet can never be routed anywhere else, e.g. onto an older build's
// shared bridge after the sandbox is gone.
type DirectRouter interface {
	// DirectPath returns the sandbox's address and the host interface
	// that leads only to it; false means use the agent's forwarder.
	DirectPath(id string) (addr netip.Addr, iface string, ok bool)
}

// directTransport is shared by every sandbox. Its connection pool is keyed
// by sandbox ID and port (the request's URL host, see withFallback), never
// by address: a connection to one sandbox is never reused for another
// that later got its address.
var directTransport = &http.Transport{
	DialContext:         dialDirect,
	MaxIdleConnsPerHost: 32,
	IdleConnTimeout:     30 * time.Second,
	DisableCompression:  true,
}

// directTarget travels in the request's context to dialDirect.
type directTarget struct {
	addr  netip.AddrPort
	iface string
}

type directTargetKey struct{}

func dialDirect(ctx context.Context, _, _ string) (net.Conn, error) {
	t, ok := ctx.Value(directTargetKey{}).(directTarget)
	if !ok || t.iface == "" {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("no direct path to the sandbox")}
	}
	d := net.Dialer{Timeout: 2 * time.Second, Control: bindToDevice(t.iface)}
	return d.DialContext(ctx, "tcp4", t.addr.String())
}

// bindToDevice pins a socket to one interface (SO_BINDTODEVICE): its
// packets leave through it or not at all, whatever the routing table says.
func bindToDevice(iface string) func(string, string, syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, iface)
		})
		if err == nil && serr != nil {
			err = fmt.Errorf("bind to interface %s: %w", iface, serr)
		}
		return err
	}
}

// withFallback tries the sandbox's address first and falls back to the
// agent's forwarder when nothing answers there: a server bound to the
// sandbox's loopback only is reachable through the agent, which dials
// 127.0.0.1 inside. A dial error happens before any byte is sent, so the
// request (whose body is buffered) can be replayed.
type withFallback struct {
	id     string
	target directTarget
	agent  http.RoundTripper
	port   int
}

func (f withFallback) RoundTrip(r *http.Request) (*http.Response, error) {
	direct := r.Clone(context.WithValue(r.Context(), directTargetKey{}, f.target))
	// The pool key: this sandbox and port (the Host header is r.Host).
	direct.URL.Host = net.JoinHostPort(f.id, strconv.Itoa(f.port))
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
