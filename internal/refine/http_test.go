package refine

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/auth"
)

// serveAs serves h's routes with the given team in every request's
// context, as the API's key middleware would.
func serveAs(t *testing.T, h *Handler, teamID string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	h.Register(mux)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if teamID != "" {
			r = r.WithContext(auth.WithTeam(r.Context(), auth.Team{ID: teamID}))
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// The request is checked before anything runs; the errors say what to fix.
func TestHandlerRejects(t *testing.T) {
	t.Parallel()
	noLLM := func(string) (Generator, error) { return nil, errors.New("no LLM model: set SBX_LLM_MODEL") }
	tests := []struct {
		name    string
		team    string
		method  string
		path    string
		body    string
		gen     func(string) (Generator, error)
		status  int
		message string
	}{
		{"no team", "", "POST", "/refinements", `{"requirement":"x"}`, noLLM, 401, "API key"},
		{"not JSON", "t1", "POST", "/refinements", `requirement=x`, noLLM, 400, "request body is not valid JSON"},
		{"unknown field", "t1", "POST", "/refinements", `{"requirement":"x","attempts":3}`, noLLM, 400, `unknown field "attempts" in the request body; the fields are`},
		{"empty requirement", "t1", "POST", "/refinements", `{"requirement":""}`, noLLM, 400, "empty requirement"},
		{"bad regex", "t1", "POST", "/refinements", `{"requirement":"x","expect":"("}`, noLLM, 400, "expected-output pattern"},
		{"negative timeout", "t1", "POST", "/refinements", `{"requirement":"x","run_timeout":-1}`, noLLM, 400, "run_timeout"},
		{"no LLM configured", "t1", "POST", "/refinements", `{"requirement":"x"}`, noLLM, 412, "SBX_LLM_MODEL"},
		{"unknown id", "t1", "GET", "/refinements/ref_nope", ``, noLLM, 404, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := NewHandler("http://127.0.0.1:1", nil, slog.New(slog.DiscardHandler))
			h.newGenerator = tt.gen
			srv := serveAs(t, h, tt.team)
			req, _ := http.NewRequestWithContext(t.Context(), tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			var e struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			_ = json.Unmarshal(b, &e)
			if resp.StatusCode != tt.status || !strings.Contains(e.Message, tt.message) {
				t.Errorf("got %d %s, want %d with %q", resp.StatusCode, b, tt.status, tt.message)
			}
		})
	}
}

// A refinement is visible only to the team that started it.
func TestHandlerGetIsTeamScoped(t *testing.T) {
	t.Parallel()
	h := NewHandler("http://127.0.0.1:1", nil, slog.New(slog.DiscardHandler))
	h.runs["ref_a"] = &run{teamID: "t1", res: &Result{ID: "ref_a", Status: StatusSucceeded, Success: true, Attempts: []*Attempt{{Number: 1, Passed: true}}}}
	for _, tc := range []struct {
		team   string
		status int
	}{{"t1", 200}, {"t2", 404}} {
		srv := serveAs(t, h, tc.team)
		resp, err := http.Get(srv.URL + "/refinements/ref_a")
		if err != nil {
			t.Fatal(err)
		}
		var res Result
		_ = json.NewDecoder(resp.Body).Decode(&res)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("team %s: status %d, want %d", tc.team, resp.StatusCode, tc.status)
		}
		if tc.status == 200 && (!res.Success || len(res.Attempts) != 1) {
			t.Errorf("team %s: result %+v", tc.team, res)
		}
	}
}

func jsonDecode(resp *http.Response, v any) error {
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}
