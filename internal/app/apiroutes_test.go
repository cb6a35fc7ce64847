package app

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sbxdev/sbx/internal/api"
	"github.com/sbxdev/sbx/internal/proxy"
)

// TestAPIReplicaRoutes: the api replica's refusals register beside the
// API's own routes (net/http panics on conflicting patterns, which made
// every --role api process die at start).
func TestAPIReplicaRoutes(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	srv := api.New(log, nil, nil, nil, proxy.New(nil, "", log), notOnAPIReplica{})
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/health", nil))
	if rec.Code/100 != 2 {
		t.Errorf("GET /health = %d", rec.Code)
	}
}
