package api

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/sbxdev/sbx/internal/sandbox"
	"github.com/sbxdev/sbx/internal/template"
)

// TestTemplateRoutes: the template API's routes register beside the
// server's own on one mux (http.ServeMux panics on conflicting patterns)
// and each request reaches the route meant for it.
func TestTemplateRoutes(t *testing.T) {
	t.Parallel()
	s := New(slog.New(slog.NewTextHandler(io.Discard, nil)), nil, nil, nil, nil, template.NewHandler(nil))
	for _, tc := range []struct{ method, path, pattern string }{
		{"GET", "/templates/aliases/tags", "GET /templates/aliases/{alias}"},
		{"GET", "/templates/aliases/my-app", "GET /templates/aliases/{alias}"},
		{"GET", "/templates/abc/tags", "GET /templates/{id}/{sub}"},
		{"POST", "/templates/tags", "POST /templates/tags"},
		{"DELETE", "/templates/tags", "DELETE /templates/tags"},
		{"DELETE", "/templates/abc", "DELETE /templates/{id}"},
		{"GET", "/templates/abc", "GET /templates/{id}"},
		{"GET", "/templates", "GET /templates"},
		{"GET", "/templates/abc/files/" + "0123", "GET /templates/{id}/files/{hash}"},
	} {
		if _, got := s.mux.Handler(httptest.NewRequest(tc.method, tc.path, nil)); got != tc.pattern {
			t.Errorf("%s %s routed to %q, want %q", tc.method, tc.path, got, tc.pattern)
		}
	}
}

// TestEnvdVersionsAgree: the template package repeats the envd version
// (it cannot import sandbox); the legacy template answers must not drift.
func TestEnvdVersionsAgree(t *testing.T) {
	t.Parallel()
	if template.EnvdVersion != sandbox.EnvdVersion {
		t.Errorf("template.EnvdVersion %q != sandbox.EnvdVersion %q", template.EnvdVersion, sandbox.EnvdVersion)
	}
}

// TestTemplatePage: GET /v2/templates pages by limit and nextToken, with
// no token after the last page.
func TestTemplatePage(t *testing.T) {
	t.Parallel()
	ts := []template.Template{{ID: "a"}, {ID: "b"}, {ID: "c"}}
	get := func(q string) ([]template.Template, string, error) {
		return templatePage(httptest.NewRequest("GET", "/v2/templates?"+q, nil), ts)
	}
	page, next, err := get("limit=2")
	if err != nil || len(page) != 2 || next == "" {
		t.Fatalf("first page: %v %q %v", page, next, err)
	}
	page, next, err = get("limit=2&nextToken=" + next)
	if err != nil || len(page) != 1 || page[0].ID != "c" || next != "" {
		t.Fatalf("last page: %v %q %v", page, next, err)
	}
	if page, next, _ := get("limit=3"); len(page) != 3 || next != "" {
		t.Errorf("a full last page: %d templates, token %q; want 3 and none", len(page), next)
	}
	for _, q := range []string{"limit=0", "limit=101", "nextToken=bm9uZQ"} {
		if _, _, err := get(q); err == nil {
			t.Errorf("%s: no error", q)
		}
	}
}
