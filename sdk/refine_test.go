package sdk

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestRefineCode(t *testing.T) {
	t.Parallel()
	const started = `{"type":"started","refinement":{"id":"ref_1","status":"running","attempts":[]}}`
	const attempt1 = `{"type":"attempt","attempt":{"number":1,"passed":false,"code":"print(x)\n","error":{"name":"NameError","value":"name 'x' is not defined"},"tokens":{"input_tokens":10,"output_tokens":5},"sandbox_id":"s1"}}`
	const attempt2 = `{"type":"attempt","attempt":{"number":2,"passed":true,"code":"print(1)\n","stdout":"1\n","tokens":{"input_tokens":20,"output_tokens":5},"sandbox_id":"s2"}}`
	const result = `{"type":"result","refinement":{"id":"ref_1","status":"succeeded","success":true,"code":"print(1)\n","attempts":[{"number":1},{"number":2,"passed":true}],"tokens":{"input_tokens":30,"output_tokens":10}}}`
	tests := []struct {
		name        string
		status      int
		body        string
		wantErr     string
		wantSuccess bool
		wantSeen    int
	}{
		{"success", 200, strings.Join([]string{started, attempt1, attempt2, result}, "\n") + "\n", "", true, 2},
		{"machinery error", 200, started + "\n" + `{"type":"error","refinement":{"id":"ref_1","status":"failed"},"error":"generate code: LLM authentication failed"}` + "\n",
			"LLM authentication failed", false, 0},
		{"stream cut", 200, started + "\n" + attempt1 + "\n", "ended before the result", false, 1},
		{"no LLM configured", 412, `{"code":412,"message":"the server cannot reach an LLM"}`, "cannot reach an LLM", false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got map[string]any
			mux := http.NewServeMux()
			mux.HandleFunc("POST /refinements", func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("X-API-Key") != testKey {
					t.Errorf("API key %q", r.Header.Get("X-API-Key"))
				}
				b, _ := io.ReadAll(r.Body)
				_ = json.Unmarshal(b, &got)
				w.Header().Set("Content-Type", "application/x-ndjson")
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			c := newTestClient(t, mux)
			var seen []RefineAttempt
			ref, err := c.RefineCode(t.Context(), RefineOptions{Requirement: "print one", MaxAttempts: 2, Expect: "^1$",
				OnAttempt: func(a RefineAttempt) { seen = append(seen, a) }})
			if got["requirement"] != "print one" || got["max_attempts"] != float64(2) || got["expect"] != "^1$" {
				t.Errorf("request body %v", got)
			}
			if len(seen) != tt.wantSeen {
				t.Errorf("OnAttempt saw %d attempts, want %d", len(seen), tt.wantSeen)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ref.Success != tt.wantSuccess || ref.ID != "ref_1" || ref.Tokens.InputTokens != 30 || seen[0].Error.Name != "NameError" {
				t.Errorf("refinement %+v", ref)
			}
		})
	}
}

func TestRefineCodeRejectsEmptyRequirement(t *testing.T) {
	t.Parallel()
	c := newTestClient(t, http.NotFoundHandler())
	if _, err := c.RefineCode(t.Context(), RefineOptions{Requirement: "  "}); err == nil || !strings.Contains(err.Error(), "empty requirement") {
		t.Fatalf("err = %v", err)
	}
	_, err := c.GetRefinement(t.Context(), "ref_1")
	if !IsNotFound(err) {
		t.Fatalf("GetRefinement on a server without refinements: %v", err)
	}
}
