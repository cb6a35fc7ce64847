package api

import (
	"errors"
	"net/http"
	"regexp"
	"strings"

	"github.com/sbxdev/sbx/internal/auth"
	"github.com/sbxdev/sbx/internal/cluster"
	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/internal/proxy"
	"github.com/sbxdev/sbx/internal/telemetry"
)

// ClusterVerifier checks that a request comes from an api replica of the
// cluster (internal/cluster) and returns the team it acts for ("" for
// sandbox traffic).
type ClusterVerifier interface {
	Verify(r *http.Request) (team string, err error)
}

// SetClusterVerifier makes the server a cluster node (sbx serve --role
// node): it serves its sandbox routes and sandbox traffic only to api
// replicas, acting for the team their signature names, and refuses
// everything else, API keys included (tenants never talk to nodes).
// GET /health stays open for probes.
func (s *Server) SetClusterVerifier(v ClusterVerifier) {
	s.cluster = v
	s.proxy.SetBehindAPI()
}

// errTenantAtNode answers an API key sent straight to a node.
var errTenantAtNode = errdefs.Unauthenticated("this is an sbx node (sbx serve --role node): it serves only the cluster's api replicas " +
	"and refuses API keys; send requests to an api replica (sbx serve --role api) instead")

func (s *Server) serveNode(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	t, isProxy, perr := s.proxy.Match(r)
	if !isProxy && r.Method == http.MethodGet && r.URL.Path == "/health" { // not envd's /health
		telemetry.SetRoute(ctx, "GET /health")
		s.public.ServeHTTP(w, r)
		return
	}
	teamID, err := s.cluster.Verify(r)
	if err != nil {
		telemetry.SetRoute(ctx, "cluster auth")
		switch {
		case apiKey(r) != "" || r.Header.Get("X-Access-Token") != "":
			err = errTenantAtNode
		case errors.Is(err, cluster.ErrNoSignature):
			err = errdefs.Unauthenticated("this is an sbx node (sbx serve --role node): requests must come from an api replica, " +
				"signed with the cluster secret (" + cluster.Header + ")")
		}
		errdefs.WriteHTTP(w, s.log, err)
		return
	}
	if isProxy {
		telemetry.SetRoute(ctx, "proxy")
		if perr != nil {
			proxy.BadRequest(w, perr)
			return
		}
		if !s.gate(w, r, t) {
			return
		}
		s.proxy.Serve(w, r, t)
		return
	}
	if s.volumes != nil && strings.HasPrefix(r.URL.Path, "/volumecontent/") {
		// Forwarded by an api replica (cluster.Volumes): the volume's
		// own token, which the request keeps, authorizes it here. Only
		// the content routes: the signature is for the volume's team,
		// and a token holder must not reach the team's API with it.
		_, pattern := s.public.Handler(r)
		if !strings.HasPrefix(pattern, r.Method+" /volumecontent/") {
			errdefs.WriteHTTP(w, nil, errdefs.NotFound("no such endpoint on a node: %s %s", r.Method, r.URL.Path))
			return
		}
		telemetry.SetRoute(ctx, pattern)
		s.public.ServeHTTP(w, r) // through the mux: it sets the path values
		return
	}
	_, pattern := s.mux.Handler(r)
	telemetry.SetRoute(ctx, pattern)
	if pattern == "" {
		errdefs.WriteHTTP(w, nil, errdefs.NotFound("no such endpoint on a node: %s %s", r.Method, r.URL.Path))
		return
	}
	if teamID == "" {
		errdefs.WriteHTTP(w, s.log, errdefs.Unauthenticated("a cluster request to a node's API must be signed for a team"))
		return
	}
	if teamID == cluster.AdminTeam {
		// The admin's node calls an api replica forwards (its /nodes
		// views and drains): those routes only, never a team's.
		if err := checkAdminSignatureScope(pattern); err != nil {
			errdefs.WriteHTTP(w, s.log, err)
			return
		}
		s.mux.ServeHTTP(w, r.WithContext(auth.WithTeam(ctx, auth.Team{Admin: true})))
		return
	}
	team, err := s.accounts.Team(ctx, teamID)
	if err != nil {
		errdefs.WriteHTTP(w, s.log, err)
		return
	}
	s.mux.ServeHTTP(w, r.WithContext(auth.WithTeam(ctx, auth.Team{ID: team.ID, Name: team.Name})))
}

// adminSignedRoutes are the node routes an api replica calls for the
// admin, signed for cluster.AdminTeam: its /nodes views and drains
// (cluster.Admin.Ask), and the kill of a team's sandboxes on each node
// (cluster.Admin.KillTeam). Nothing else: a request signed for the admin
// acts as the admin key, and a node needs no more of it than this.
var adminSignedRoutes = map[string]bool{
	"GET /nodes/{nodeID}":                       true,
	"POST /nodes/{nodeID}":                      true,
	"POST /admin/teams/{teamID}/sandboxes/kill": true,
}

// checkAdminSignatureScope refuses a route of the node's mux (its
// pattern) that a request signed for the cluster admin may not reach.
func checkAdminSignatureScope(pattern string) error {
	if adminSignedRoutes[pattern] {
		return nil
	}
	return errdefs.Denied("a request signed for the cluster admin reaches only GET and POST /nodes/{nodeID} " +
		"and POST /admin/teams/{teamID}/sandboxes/kill")
}

// SandboxForwarder sends an API request about one sandbox to the node
// that runs it (an api replica: internal/cluster.Forwarder).
type SandboxForwarder interface {
	ForwardSandbox(w http.ResponseWriter, r *http.Request, teamID, id string)
}

// SetSandboxForwarder makes an api replica forward the sandbox routes it
// holds no state for to the sandbox's node (nodeSideRoute).
func (s *Server) SetSandboxForwarder(f SandboxForwarder) { s.forwarder = f }

// nodeSideRoute matches the per-sandbox routes a node answers from its
// manager: logs, metrics, refreshes, snapshots, fork, network. The others
// (get, kill, timeout, connect, pause, resume) go through Sandboxes.
var nodeSideRoute = regexp.MustCompile(`^/(?:v2/)?sandboxes/([a-z0-9]+)/(?:logs|metrics|refreshes|snapshots|fork|network)$`)

// forwardToNode forwards r when it is a node-side route of a team's
// sandbox on an api replica; false when it is not one.
func (s *Server) forwardToNode(w http.ResponseWriter, r *http.Request, t auth.Team) bool {
	if s.forwarder == nil || t.ID == "" {
		return false
	}
	m := nodeSideRoute.FindStringSubmatch(r.URL.Path)
	if m == nil {
		return false
	}
	telemetry.SetRoute(r.Context(), "forward to node")
	s.forwarder.ForwardSandbox(w, r, t.ID, m[1])
	return true
}
