package cluster

import (
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// Forwarder sends an API request about one sandbox, as the client sent
// it, to the node that runs the sandbox: the calls an api replica has no
// state for (logs, metrics, snapshots, fork, refreshes, network), which
// the node answers from its manager as a single box would.
type Forwarder struct {
	sbs    *Sandboxes
	signer *Signer
	tr     http.RoundTripper
	log    *slog.Logger
	stats  *Metrics // nil: failures not counted
}

// SetMetrics makes forwards that fail at a node counted.
func (f *Forwarder) SetMetrics(m *Metrics) { f.stats = m }

// NewForwarder returns the forwarder of an api replica.
func NewForwarder(sbs *Sandboxes, signer *Signer, log *slog.Logger) *Forwarder {
	return &Forwarder{sbs: sbs, signer: signer, tr: NodeTransport(), log: log}
}

// ForwardSandbox forwards r, about sandbox id of team teamID, to its node.
func (f *Forwarder) ForwardSandbox(w http.ResponseWriter, r *http.Request, teamID, id string) {
	sb, base, err := f.sbs.owner(r.Context(), teamID, id)
	if err != nil {
		errdefs.WriteHTTP(w, f.log, err)
		return
	}
	target, err := url.Parse(base)
	if err != nil {
		errdefs.WriteHTTP(w, f.log, err)
		return
	}
	rp := &httputil.ReverseProxy{
		Transport:     f.tr,
		FlushInterval: -1, // log streams
		ErrorLog:      slog.NewLogLogger(f.log.Handler(), slog.LevelDebug),
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host, pr.Out.Host = target.Scheme, target.Host, target.Host
			// The node acts for the signed team, never on a key; routing
			// headers would make it sandbox traffic, which is not this.
			for _, h := range []string{"X-API-Key", "Authorization", "X-Team-ID", Header, SandboxIDHeader, SandboxPortHeader} {
				pr.Out.Header.Del(h)
			}
			if err := f.signer.Sign(pr.Out, sb.NodeID, teamID); err != nil {
				f.log.Error("sign a forwarded request", "err", err)
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode >= 500 {
				f.stats.forwardError(sb.NodeID)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return
			}
			f.stats.forwardError(sb.NodeID)
			errdefs.WriteHTTP(w, f.log, errdefs.Unavailable("the node of sandbox %s did not answer: %v", id, err))
		},
	}
	rp.ServeHTTP(w, r)
}
