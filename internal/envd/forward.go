package envd

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"syscall"
	"time"
)

// PortHeader names the sandbox port a host request is meant for. Only the
// unix-socket listener honours it: it is the host's private channel.
const PortHeader = "X-Sbx-Port"

// forwarding reverse-proxies requests carrying X-Sbx-Port to that port on
// the sandbox's loopback, and passes the rest to next.
func (s *Server) forwarding(next http.Handler, sandboxID string) http.Handler {
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true, // pass encodings through untouched
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			port := pr.In.Header.Get(PortHeader)
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = net.JoinHostPort("127.0.0.1", port)
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Del(PortHeader)
		},
		Transport:     transport,
		FlushInterval: -1, // stream every write: SSE, NDJSON, long polls
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			// r is the outgoing request: the port is in its URL now.
			port, _ := strconv.Atoi(r.URL.Port())
			if r.Context().Err() != nil {
				return // the client went away; nobody reads an answer
			}
			body := map[string]any{"sandboxId": sandboxID, "message": "The sandbox is running but port is not open", "port": port, "code": http.StatusBadGateway}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				s.log.Debug("forwarding failed", "port", port, "err", err)
				body["message"] = "The sandbox is running but the request to port " + strconv.Itoa(port) + " failed: " + err.Error()
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadGateway)
			_ = json.NewEncoder(w).Encode(body)
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.Header.Get(PortHeader)
		if p == "" {
			next.ServeHTTP(w, r)
			return
		}
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]any{"code": http.StatusBadRequest, "message": PortHeader + " must be a port number between 1 and 65535, got " + strconv.Quote(p)})
			return
		}
		// Without full duplex, net/http stops reading the request body once
		// the response has started, so a server that answers before reading
		// all of a POST (or streams while reading) gets its request cut.
		_ = http.NewResponseController(w).EnableFullDuplex()
		proxy.ServeHTTP(w, r)
	})
}
