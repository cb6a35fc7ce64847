package history

import (
	"net/http"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// OnAPIReplica answers, on an api replica (sbx serve --role api), the
// metrics routes that read several sandboxes' history at once. Each node
// samples its own sandboxes and keeps the history in its memory; nothing
// of it is in the shared database, so an api replica would have to ask
// every node and merge: not built. One sandbox's history
// (GET /sandboxes/{id}/metrics) is forwarded to its node and works.
type OnAPIReplica struct{}

// Register adds the routes, each answering 412 with what to do instead.
func (OnAPIReplica) Register(mux *http.ServeMux) {
	for _, p := range []string{"GET /sandboxes/metrics", "GET /teams/{teamID}/metrics", "GET /teams/{teamID}/metrics/max"} {
		mux.HandleFunc(p, func(w http.ResponseWriter, _ *http.Request) {
			errdefs.WriteHTTP(w, nil, errdefs.Precondition("%s is not served by an api replica (sbx serve --role api): "+
				"each node keeps the metrics history of its own sandboxes in memory, and merging them across nodes is not built; "+
				"read each sandbox's with GET /sandboxes/{sandboxID}/metrics, which is forwarded to its node", p))
		})
	}
}

// AdminPatterns: the admin key reaches the team routes too, and gets the
// same answer (api.AdminRoutes).
func (OnAPIReplica) AdminPatterns() []string {
	return []string{"GET /teams/{teamID}/metrics", "GET /teams/{teamID}/metrics/max"}
}
