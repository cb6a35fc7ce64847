package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/testenv"
	"github.com/sbxdev/sbx/tests/harness"

	"github.com/sbxdev/sbx/internal/llm"
	"github.com/sbxdev/sbx/internal/refine"
	"github.com/sbxdev/sbx/sdk"
)

// scriptedLLM speaks the OpenAI chat-completions protocol and answers with
// scripted replies in order, repeating the last one; it records the user
// message of every request.
type scriptedLLM struct {
	mu      sync.Mutex
	replies []string
	prompts []string
}

func fence(code string) string { return "Here you go:\n```python\n" + code + "\n```\n" }

func (s *scriptedLLM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/chat/completions" {
		http.Error(w, `{"error":{"message":"unknown path"}}`, http.StatusNotFound)
		return
	}
	var req struct {
		Model    string `json:"model"`
		Messages []struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"messages"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, `{"error":{"message":"bad json"}}`, http.StatusBadRequest)
		return
	}
	var user string
	for _, m := range req.Messages {
		if m.Role == "user" {
			user = m.Content
		}
	}
	s.mu.Lock()
	i := len(s.prompts)
	s.prompts = append(s.prompts, user)
	reply := s.replies[min(i, len(s.replies)-1)]
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"id": fmt.Sprintf("chatcmpl-%d", i), "object": "chat.completion", "model": req.Model,
		"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": reply}}},
		"usage": map[string]any{"prompt_tokens": 100 + i, "completion_tokens": 20, "total_tokens": 120 + i},
	})
}

func (s *scriptedLLM) Prompts() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.prompts...)
}

func startLLM(t *testing.T, replies ...string) (*scriptedLLM, string) {
	t.Helper()
	s := &scriptedLLM{replies: replies}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv.URL + "/v1"
}

const (
	buggyCode = "values = [3, 4, 5]\ntotal = sum(values)\nprint('total is', totl)"
	fixedCode = "values = [3, 4, 5]\ntotal = sum(values)\nprint('total is', total)"
)

func newRefiner(t *testing.T, s *Server, llmURL string) *refine.Refiner {
	t.Helper()
	gen, err := llm.New(llm.Config{BaseURL: llmURL, Model: "scripted"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	return refine.New(gen, refine.NewExecutor(s.Client(t), log), log)
}

// sandboxEvents returns the event types and the refinement_id of each
// event of a sandbox, through GET /events/sandboxes/{id}.
func sandboxEvents(t *testing.T, s *Server, id string) (types []string, refIDs []string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL+"/events/sandboxes/"+id+"?limit=100", nil)
	req.Header.Set("X-API-Key", s.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /events/sandboxes/%s: %d %s", id, resp.StatusCode, b)
	}
	var evs []struct {
		Type      string `json:"type"`
		EventData struct {
			Metadata map[string]string `json:"sandbox_metadata"`
		} `json:"eventData"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&evs); err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		types = append(types, e.Type)
		refIDs = append(refIDs, e.EventData.Metadata[refine.MetadataKey])
	}
	return types, refIDs
}

func TestRefine(t *testing.T) {
	s := StartServer(t)
	s.WaitTemplate(t, "code-interpreter")

	t.Run("error feedback then success", func(t *testing.T) {
		fake, url := startLLM(t, fence(buggyCode), fence(fixedCode))
		ref := newRefiner(t, s, url)
		var seen []int
		res, err := ref.Run(t.Context(), refine.Options{Requirement: "Print the total of 3, 4 and 5.", MaxAttempts: 3,
			Expect: `total is 12`}, refine.Observer{OnAttempt: func(a *refine.Attempt) { seen = append(seen, a.Number) }})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Success || res.Status != refine.StatusSucceeded || len(res.Attempts) != 2 || len(seen) != 2 {
			t.Fatalf("success %v status %s attempts %d observed %v, want success after 2", res.Success, res.Status, len(res.Attempts), seen)
		}
		first, second := res.Attempts[0], res.Attempts[1]
		if first.Error == nil || first.Error.Name != "NameError" || first.Passed {
			t.Fatalf("first attempt error = %+v, want a NameError from the sandbox", first.Error)
		}
		prompts := fake.Prompts()
		if len(prompts) != 2 {
			t.Fatalf("LLM saw %d requests, want 2 (the loop must stop at success)", len(prompts))
		}
		// The real error text from the sandbox, not something we made up.
		if !strings.Contains(prompts[1], first.Error.Value) || !strings.Contains(prompts[1], "name 'totl' is not defined") {
			t.Errorf("second prompt lacks the first attempt's error %q:\n%s", first.Error.Value, prompts[1])
		}
		if !strings.Contains(prompts[1], "print('total is', totl)") {
			t.Errorf("second prompt lacks the previous code:\n%s", prompts[1])
		}
		if strings.Contains(prompts[0], "previous attempt") {
			t.Errorf("first prompt talks about a previous attempt:\n%s", prompts[0])
		}
		if !strings.Contains(prompts[0], "numpy==") {
			t.Errorf("first prompt does not list the template's installed packages:\n%.2000s", prompts[0])
		}
		if !second.Passed || strings.TrimSpace(second.Stdout) != "total is 12" || res.Code != second.Code {
			t.Errorf("second attempt passed %v stdout %q", second.Passed, second.Stdout)
		}
		if res.Tokens.InputTokens != 201 || res.Tokens.OutputTokens != 40 {
			t.Errorf("tokens = %+v, want the scripted usage summed (201 in, 40 out)", res.Tokens)
		}
		// Correlation: every attempt's sandbox carries refinement_id in its
		// metadata and in its lifecycle events, and is gone afterwards.
		for _, a := range res.Attempts {
			if a.SandboxID == "" || a.SandboxCostUSD <= 0 {
				t.Errorf("attempt %d: sandbox %q cost %v", a.Number, a.SandboxID, a.SandboxCostUSD)
				continue
			}
			types, ids := sandboxEvents(t, s, a.SandboxID)
			if !contains(types, "sandbox.lifecycle.created") || !contains(types, "sandbox.lifecycle.killed") {
				t.Errorf("sandbox %s events %v, want created and killed", a.SandboxID, types)
			}
			for i, id := range ids {
				if id != res.ID {
					t.Errorf("sandbox %s event %s has refinement_id %q, want %q", a.SandboxID, types[i], id, res.ID)
				}
			}
		}
		running, err := s.Client(t).List(t.Context(), sdk.ListOptions{Metadata: map[string]string{refine.MetadataKey: res.ID}})
		if err != nil {
			t.Fatal(err)
		}
		if len(running) != 0 {
			t.Errorf("%d sandboxes of the refinement still exist after it ended", len(running))
		}
		t.Logf("overhead excluding LLM per attempt: %v ms", overheads(res))
	})

	t.Run("gives up at max attempts with the last error", func(t *testing.T) {
		fake, url := startLLM(t, fence("print(1/0)"), fence("import json\njson.loads('{broken')"))
		res, err := newRefiner(t, s, url).Run(t.Context(), refine.Options{Requirement: "Print something.", MaxAttempts: 2}, refine.Observer{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Success || res.Status != refine.StatusFailed || len(res.Attempts) != 2 || len(fake.Prompts()) != 2 {
			t.Fatalf("success %v status %s attempts %d prompts %d; want failure after exactly 2", res.Success, res.Status, len(res.Attempts), len(fake.Prompts()))
		}
		if res.LastError == nil || res.LastError.Name != "JSONDecodeError" || !strings.Contains(res.Error, "JSONDecodeError") {
			t.Errorf("last error %+v, error %q; want the second attempt's JSONDecodeError", res.LastError, res.Error)
		}
		if !strings.Contains(fake.Prompts()[1], "ZeroDivisionError") {
			t.Errorf("second prompt lacks ZeroDivisionError:\n%s", fake.Prompts()[1])
		}
	})

	t.Run("test code and images", func(t *testing.T) {
		plot := "import matplotlib.pyplot as plt\ndef area(w, h):\n    return w * h\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()\nprint('area', area(2, 3))"
		_, url := startLLM(t, fence("def area(w, h):\n    return w + h\nprint('ok')"), fence(plot))
		dir := t.TempDir()
		res, err := newRefiner(t, s, url).Run(t.Context(), refine.Options{Requirement: "Define area(w, h) and plot squares.",
			TestCode: "assert area(2, 3) == 6, 'area(2, 3) should be 6'", ImagesDir: dir}, refine.Observer{})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Success || len(res.Attempts) != 2 {
			t.Fatalf("success %v after %d attempts, want success after 2", res.Success, len(res.Attempts))
		}
		if v := res.Attempts[0].Validation; !strings.Contains(v, "area(2, 3) should be 6") {
			t.Errorf("first attempt validation %q, want the test's assertion message", v)
		}
		var files []string
		for _, o := range res.Attempts[1].Results {
			files = append(files, o.Files...)
		}
		if len(files) != 1 || !strings.HasSuffix(files[0], ".png") {
			t.Fatalf("saved images %v, want one PNG", files)
		}
		b, err := os.ReadFile(files[0])
		if err != nil || len(b) < 8 || string(b[1:4]) != "PNG" {
			t.Errorf("%s is not a PNG (%d bytes, %v)", files[0], len(b), err)
		}
	})

	t.Run("reply without a code block is fed back", func(t *testing.T) {
		fake, url := startLLM(t, "The answer is print(12)", fence(fixedCode))
		res, err := newRefiner(t, s, url).Run(t.Context(), refine.Options{Requirement: "Print the total."}, refine.Observer{})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Success || len(res.Attempts) != 2 || res.Attempts[0].Error == nil || res.Attempts[0].Error.Name != "NoCodeBlock" || res.Attempts[0].SandboxID != "" {
			t.Fatalf("success %v attempts %d first %+v", res.Success, len(res.Attempts), res.Attempts[0])
		}
		if !strings.Contains(fake.Prompts()[1], "no fenced code block") {
			t.Errorf("second prompt does not explain the missing code block:\n%s", fake.Prompts()[1])
		}
	})

	t.Run("best of two keeps the passing candidate", func(t *testing.T) {
		_, url := startLLM(t, fence(buggyCode), fence(fixedCode))
		res, err := newRefiner(t, s, url).Run(t.Context(), refine.Options{Requirement: "Print the total.", MaxAttempts: 1, BestOf: 2}, refine.Observer{})
		if err != nil {
			t.Fatal(err)
		}
		var passed, cands int
		for _, a := range res.Attempts {
			if a.Passed {
				passed++
			}
			cands |= 1 << a.Candidate
		}
		if !res.Success || passed != 1 || cands != 3 || !strings.Contains(res.Code, "print('total is', total)") {
			t.Fatalf("success %v passed %d candidates mask %b code %q", res.Success, passed, cands, res.Code)
		}
	})

	t.Run("python in a template without the interpreter", func(t *testing.T) {
		_, url := startLLM(t, fence(fixedCode))
		_, err := newRefiner(t, s, url).Run(t.Context(), refine.Options{Requirement: "x", Template: "base"}, refine.Observer{})
		if err == nil || !strings.Contains(err.Error(), "runs no code interpreter") || !strings.Contains(err.Error(), "--language bash") {
			t.Fatalf("err = %v, want one naming the missing code interpreter and the alternatives", err)
		}
	})

	t.Run("anthropic provider", func(t *testing.T) {
		var mu sync.Mutex
		var prompts []string
		replies := []string{fence(buggyCode), fence(fixedCode)}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var req struct {
				System   string `json:"system"`
				Messages []struct {
					Content string `json:"content"`
				} `json:"messages"`
			}
			if r.URL.Path != "/v1/messages" || r.Header.Get("anthropic-version") == "" || json.NewDecoder(r.Body).Decode(&req) != nil || req.System == "" {
				w.WriteHeader(http.StatusBadRequest)
				io.WriteString(w, `{"type":"error","error":{"type":"invalid_request_error","message":"bad request"}}`)
				return
			}
			mu.Lock()
			i := len(prompts)
			prompts = append(prompts, req.Messages[len(req.Messages)-1].Content)
			mu.Unlock()
			json.NewEncoder(w).Encode(map[string]any{"id": "msg", "type": "message", "role": "assistant", "model": "claude-scripted",
				"content":     []any{map[string]any{"type": "text", "text": replies[min(i, 1)]}},
				"stop_reason": "end_turn", "usage": map[string]any{"input_tokens": 50, "output_tokens": 10}})
		}))
		t.Cleanup(srv.Close)
		gen, err := llm.New(llm.Config{Provider: llm.ProviderAnthropic, BaseURL: srv.URL, Model: "claude-scripted"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ref := refine.New(gen, refine.NewExecutor(s.Client(t), nil), nil)
		res, err := ref.Run(t.Context(), refine.Options{Requirement: "Print the total."}, refine.Observer{})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Success || len(res.Attempts) != 2 || res.Attempts[1].Model != "claude-scripted" || res.Tokens.InputTokens != 100 {
			t.Fatalf("success %v attempts %d tokens %+v", res.Success, len(res.Attempts), res.Tokens)
		}
		if !strings.Contains(prompts[1], "name 'totl' is not defined") {
			t.Errorf("second Anthropic request lacks the sandbox's error:\n%s", prompts[1])
		}
	})

	t.Run("bash via commands", func(t *testing.T) {
		_, url := startLLM(t, "```bash\necho start; exit 3\n```", "```bash\necho \"sum=$((2+3))\"\n```")
		res, err := newRefiner(t, s, url).Run(t.Context(), refine.Options{Requirement: "Print sum=5", Language: "bash",
			Template: "base", Expect: `^sum=5\s*$`}, refine.Observer{})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Success || len(res.Attempts) != 2 || res.Attempts[0].Error == nil || !strings.Contains(res.Attempts[0].Error.Value, "code 3") {
			t.Fatalf("success %v attempts %d first error %+v", res.Success, len(res.Attempts), res.Attempts[0].Error)
		}
	})
}

func pkgVersion(pkgs []string, name string) string {
	for _, p := range pkgs {
		if strings.HasPrefix(p, name+"==") {
			return p
		}
	}
	return "<" + name + " missing>"
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func overheads(res *refine.Result) []float64 {
	var o []float64
	for _, a := range res.Attempts {
		o = append(o, a.OverheadMS)
	}
	sort.Float64s(o)
	return o
}

// TestRefineServer drives the server-side loop (POST /refinements through
// sdk.RefineCode, GET /refinements/{id}) and the `sbx refine` CLI. The
// server reads SBX_LLM_* from its environment, inherited from the test.
func TestRefineServer(t *testing.T) {
	testenv.Require(t, testenv.Integration...)
	fake, url := startLLM(t, fence(buggyCode), fence(fixedCode))
	t.Setenv("SBX_LLM_BASE_URL", url)
	t.Setenv("SBX_LLM_MODEL", "scripted")
	t.Setenv("SBX_LLM_API_KEY", "")
	s := StartServer(t)
	s.WaitTemplate(t, "code-interpreter")
	c := s.Client(t)

	var streamed []sdk.RefineAttempt
	ref, err := c.RefineCode(t.Context(), sdk.RefineOptions{Requirement: "Print the total of 3, 4 and 5.", MaxAttempts: 3,
		ID: "ref-e2e-server", OnAttempt: func(a sdk.RefineAttempt) { streamed = append(streamed, a) }})
	if err != nil {
		t.Fatal(err)
	}
	if !ref.Success || ref.Status != "succeeded" || len(ref.Attempts) != 2 || len(streamed) != 2 {
		t.Fatalf("success %v status %s attempts %d streamed %d; want success after 2", ref.Success, ref.Status, len(ref.Attempts), len(streamed))
	}
	if streamed[0].Error == nil || !strings.Contains(fake.Prompts()[1], streamed[0].Error.Value) {
		t.Errorf("second prompt lacks the streamed first error %+v", streamed[0].Error)
	}
	got, err := c.GetRefinement(t.Context(), "ref-e2e-server")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != "succeeded" || len(got.Attempts) != 2 || got.Code != ref.Code {
		t.Errorf("GET /refinements/{id}: status %s attempts %d", got.Status, len(got.Attempts))
	}
	for _, a := range got.Attempts {
		_, ids := sandboxEvents(t, s, a.SandboxID)
		if len(ids) == 0 || ids[0] != "ref-e2e-server" {
			t.Errorf("sandbox %s events carry refinement_id %v", a.SandboxID, ids)
		}
	}
	// The team's second refinement reuses the template probe.
	again, err := c.RefineCode(t.Context(), sdk.RefineOptions{Requirement: "Print the total of 3, 4 and 5."})
	if err != nil {
		t.Fatal(err)
	}
	if ref.Environment == nil || again.Environment == nil || again.Environment.ProbeSandboxID != ref.Environment.ProbeSandboxID ||
		!slices.Contains(ref.Environment.Packages, "numpy=="+strings.TrimPrefix(pkgVersion(ref.Environment.Packages, "numpy"), "numpy==")) {
		t.Errorf("environments %+v then %+v: want one probe, reused, listing numpy", ref.Environment, again.Environment)
	}
	// Another team cannot see it.
	other := s.ClientWithKey(t, s.CreateTeam(t, "refine-other"))
	if _, err := other.GetRefinement(t.Context(), "ref-e2e-server"); !sdk.IsNotFound(err) {
		t.Errorf("other team's GET: err = %v, want not found", err)
	}
	if _, err := c.RefineCode(t.Context(), sdk.RefineOptions{Requirement: "x", Language: "cobol"}); !sdk.IsInvalidArgument(err) || !strings.Contains(err.Error(), "cobol") {
		t.Errorf("bad language: err = %v, want 400 naming it", err)
	}
	if _, err := c.RefineCode(t.Context(), sdk.RefineOptions{Requirement: "x", Template: "no-such-template"}); !sdk.IsNotFound(err) || !strings.Contains(err.Error(), "no-such-template") {
		t.Errorf("unknown template: err = %v, want 404 naming it", err)
	}

	t.Run("cli json", func(t *testing.T) {
		for _, tc := range []struct {
			name     string
			replies  []string
			wantExit int
		}{
			{"success", []string{fence(buggyCode), fence(fixedCode)}, 0},
			{"failure", []string{fence("raise ValueError('never works')")}, 1},
		} {
			t.Run(tc.name, func(t *testing.T) {
				cliLLM, cliURL := startLLM(t, tc.replies...)
				cmd := exec.CommandContext(t.Context(), s.Bin, "refine", "Print the total of 3, 4 and 5.", "--max-attempts", "2", "--json")
				cmd.Env = append(os.Environ(), "E2B_API_URL="+s.URL, "E2B_SANDBOX_URL="+s.URL, "E2B_API_KEY="+s.APIKey,
					"SBX_LLM_BASE_URL="+cliURL, "SBX_LLM_MODEL=scripted")
				cmd.Dir = t.TempDir()
				var stderr strings.Builder
				cmd.Stderr = &stderr
				out, err := cmd.Output()
				code := 0
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					code = ee.ExitCode()
				} else if err != nil {
					t.Fatal(err)
				}
				if code != tc.wantExit {
					t.Fatalf("exit %d, want %d\nstderr: %s", code, tc.wantExit, stderr.String())
				}
				dec := json.NewDecoder(strings.NewReader(string(out)))
				var res refine.Result
				if err := dec.Decode(&res); err != nil {
					t.Fatalf("stdout is not one JSON object: %v\n%s", err, out)
				}
				if dec.More() {
					t.Errorf("stdout has more than one JSON value:\n%s", out)
				}
				if res.Success != (tc.wantExit == 0) || len(res.Attempts) != 2 || len(cliLLM.Prompts()) != 2 {
					t.Errorf("success %v attempts %d prompts %d", res.Success, len(res.Attempts), len(cliLLM.Prompts()))
				}
				if !strings.Contains(stderr.String(), "Attempt 1/2") {
					t.Errorf("progress missing from stderr: %s", stderr.String())
				}
			})
		}
	})
}

// A restarted server still answers GET /refinements/{id} from its database.
func TestRefineSurvivesRestart(t *testing.T) {
	testenv.Require(t, testenv.Integration...)
	_, url := startLLM(t, fence(fixedCode))
	t.Setenv("SBX_LLM_BASE_URL", url)
	t.Setenv("SBX_LLM_MODEL", "scripted")
	s := StartServer(t)
	s.WaitTemplate(t, "code-interpreter")
	ref, err := s.Client(t).RefineCode(t.Context(), sdk.RefineOptions{Requirement: "Print the total."})
	if err != nil || !ref.Success {
		t.Fatalf("refinement: %+v, %v", ref, err)
	}
	s.Stop(syscall.SIGTERM)
	s.Start(t)
	got, err := s.Client(t).GetRefinement(t.Context(), ref.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != "succeeded" || got.Code != ref.Code || len(got.Attempts) != 1 || got.Attempts[0].SandboxID != ref.Attempts[0].SandboxID {
		t.Errorf("after restart GET = %+v, want the finished refinement", got)
	}
}

// An LLM that rejects the key stops the loop at once with a clear error
// and no attempt is counted.
func TestRefineLLMAuthFailure(t *testing.T) {
	s := StartServer(t)
	s.WaitTemplate(t, "code-interpreter")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":{"message":"Incorrect API key provided: sk-bad"}}`)
	}))
	t.Cleanup(srv.Close)
	res, err := newRefiner(t, s, srv.URL+"/v1").Run(t.Context(), refine.Options{Requirement: "x", MaxAttempts: 3}, refine.Observer{})
	if !errors.Is(err, llm.ErrAuth) || !strings.Contains(err.Error(), "SBX_LLM_API_KEY") {
		t.Fatalf("err = %v, want llm.ErrAuth naming SBX_LLM_API_KEY", err)
	}
	if res == nil || res.Success || len(res.Attempts) != 1 || res.Attempts[0].SandboxID != "" {
		t.Fatalf("result %+v, want one failed attempt that never reached a sandbox", res)
	}
}

// TestRefineOverhead measures the loop's own cost per attempt (sandbox
// claim + execute + validate, everything but the LLM; kills run in the
// background) with a warm
// pool. The scripted LLM takes a second per reply, as a fast real one
// would, which gives the pool time to refill. It reports; it asserts no
// time.
func TestRefineOverhead(t *testing.T) {
	s := StartServer(t)
	s.WaitTemplate(t, "code-interpreter")
	fake := &scriptedLLM{replies: []string{fence("print('attempt')")}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(time.Second):
		case <-r.Context().Done():
			return
		}
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	const n = 8
	res, err := newRefiner(t, s, srv.URL+"/v1").Run(t.Context(), refine.Options{Requirement: "never satisfied",
		MaxAttempts: n, Expect: "^impossible$"}, refine.Observer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Attempts) != n || res.Success {
		t.Fatalf("%d attempts success %v, want %d failed", len(res.Attempts), res.Success, n)
	}
	var over, create, exec, validate []float64
	for _, a := range res.Attempts {
		over, create = append(over, a.OverheadMS), append(create, a.SandboxMS)
		exec, validate = append(exec, a.ExecMS), append(validate, a.ValidateMS)
	}
	t.Logf("per attempt over %d attempts, ms (p50 / max): overhead %.1f / %.1f; sandbox claim %.1f / %.1f; execute %.1f / %.1f; validate %.1f / %.1f",
		n, median(over), slicesMax(over), median(create), slicesMax(create), median(exec), slicesMax(exec), median(validate), slicesMax(validate))
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func slicesMax(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// TestRefineExample runs examples/refinement, the seed's
// AdvancedIterativeCodeGenerator: a server-side refinement in the
// data-science template while the example's own webhook receiver watches
// the generation's sandboxes come and go, matched by refinement_id.
func TestRefineExample(t *testing.T) {
	testenv.Require(t, testenv.Integration...)
	fake, url := startLLM(t, fence("import pandas as pd\nprint(pd.DataFrame({'a': [1, 2]}).corr(method='pearsn'))"),
		fence("import pandas as pd\nprint(pd.DataFrame({'a': [1, 2], 'b': [2, 4]}).corr().iloc[0, 1])"))
	t.Setenv("SBX_LLM_BASE_URL", url)
	t.Setenv("SBX_LLM_MODEL", "scripted")
	s := startServerArgs(t, "--webhook-allow-private")
	s.WaitTemplate(t, "code-interpreter")

	bin := filepath.Join(t.TempDir(), "refinement")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	build := exec.CommandContext(t.Context(), gobin, "build", "-o", bin, "./examples/refinement")
	build.Dir = harness.RepoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the example: %v\n%s", err, out)
	}
	cmd := exec.CommandContext(t.Context(), bin, "--correlation-id", "req-789", "--requirement", "Correlate two columns with pandas.")
	cmd.Env = append(os.Environ(), "E2B_API_URL="+s.URL, "E2B_SANDBOX_URL="+s.URL, "E2B_API_KEY="+s.APIKey)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("example failed: %v\n%s", err, out)
	}
	text := string(out)
	i := strings.LastIndex(text, "\n{")
	if i < 0 {
		t.Fatalf("example printed no final JSON object:\n%s", text)
	}
	var res struct {
		Success  bool `json:"success"`
		Attempts int  `json:"attempts"`
		Created  int  `json:"sandboxes_created_seen_by_webhook"`
		Killed   int  `json:"sandboxes_killed_seen_by_webhook"`
	}
	if err := json.Unmarshal([]byte(text[i+1:]), &res); err != nil {
		t.Fatalf("final object: %v\n%s", err, text)
	}
	if !res.Success || res.Attempts != 2 || len(fake.Prompts()) != 2 {
		t.Fatalf("success %v attempts %d prompts %d\n%s", res.Success, res.Attempts, len(fake.Prompts()), text)
	}
	if res.Created < 2 || res.Killed < 2 || !strings.Contains(text, "created (attempt 1, refinement req-789)") ||
		!strings.Contains(text, "killed (attempt 2, refinement req-789)") {
		t.Errorf("webhook saw %d created, %d killed; want every attempt's sandbox come and go:\n%s", res.Created, res.Killed, text)
	}
	if !strings.Contains(fake.Prompts()[1], "'pearsn' was supplied") {
		t.Errorf("second prompt lacks the pandas error:\n%s", fake.Prompts()[1])
	}
}
