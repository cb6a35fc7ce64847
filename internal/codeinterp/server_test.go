package codeinterp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbxdev/sbx/internal/codeinterp/jupyter"
	"github.com/sbxdev/sbx/internal/testenv"
)

// requireKernel skips (fails under SBX_REQUIRE_INTEGRATION=1) without a
// python3 kernel on the host.
func requireKernel(t testing.TB) {
	t.Helper()
	spec, err := jupyter.LoadSpec(jupyter.DefaultKernelDirs, "python3")
	if err == nil {
		_, err = exec.LookPath(spec.Argv[0])
	}
	if err != nil {
		testenv.Skip(t, "python3 Jupyter kernel not available (apt-get install python3-ipykernel python3-matplotlib python3-pandas): %v", err)
	}
}

// requirePyModules skips (fails under SBX_REQUIRE_INTEGRATION=1) when the
// kernel's python lacks one of modules.
func requirePyModules(t testing.TB, modules ...string) {
	t.Helper()
	spec, err := jupyter.LoadSpec(jupyter.DefaultKernelDirs, "python3")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range modules {
		if err := exec.Command(spec.Argv[0], "-c", "import "+m).Run(); err != nil {
			testenv.Skip(t, "python module %s not installed for the kernel (apt-get install python3-%s): %v", m, m, err)
		}
	}
}

func newTestServer(t testing.TB, cfg Config) (*Server, *httptest.Server) {
	t.Helper()
	requireKernel(t)
	if cfg.DefaultCwd == "" {
		cfg.DefaultCwd = t.TempDir()
	}
	s := New(cfg, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		// The server first: a run stuck in a kernel would keep ts.Close
		// waiting for its handler, and the kernel alive, for good.
		s.Close(context.Background())
		ts.Close()
	})
	return s, ts
}

type line map[string]any

func (l line) str(k string) string { s, _ := l[k].(string); return s }

// execute posts to /execute and returns the decoded lines.
func execute(t testing.TB, base string, body any, hdr ...string) []line {
	t.Helper()
	resp := post(t, base+"/execute", body, hdr...)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("/execute: %s %s", resp.Status, b)
	}
	out, err := readLines(resp.Body)
	if err != nil {
		t.Fatalf("%v: %v", err, out)
	}
	return out
}

// readLines decodes an /execute stream, which must end with
// end_of_execution; on an error it returns the lines read so far.
func readLines(r io.Reader) ([]line, error) {
	var out []line
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return out, fmt.Errorf("bad NDJSON line %q: %w", sc.Text(), err)
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		return out, err
	}
	if len(out) == 0 || out[len(out)-1].str("type") != "end_of_execution" {
		return out, fmt.Errorf("stream does not end with end_of_execution")
	}
	return out, nil
}

func post(t testing.TB, url string, body any, hdr ...string) *http.Response {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func ofType(lines []line, typ string) []line {
	var out []line
	for _, l := range lines {
		if l.str("type") == typ {
			out = append(out, l)
		}
	}
	return out
}

func stdout(lines []line) string {
	var b strings.Builder
	for _, l := range ofType(lines, "stdout") {
		b.WriteString(l.str("text"))
	}
	return b.String()
}

func TestExecutePython(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	execute(t, ts.URL, map[string]any{"code": "x = 1"})

	tests := []struct {
		name    string
		code    string
		modules []string
		check   func(t *testing.T, lines []line)
	}{
		{"state persists", "x + 1", nil, func(t *testing.T, lines []line) {
			r := ofType(lines, "result")
			if len(r) != 1 || r[0].str("text") != "2" || r[0]["is_main_result"] != true {
				t.Fatalf("results %v", r)
			}
		}},
		{"quotes stripped", "'y'", nil, func(t *testing.T, lines []line) {
			if r := ofType(lines, "result"); len(r) != 1 || r[0].str("text") != "y" {
				t.Fatalf("results %v", r)
			}
		}},
		{"stdout and stderr in order", "import sys\nprint('a')\nprint('b', file=sys.stderr)\nprint('c')", nil, func(t *testing.T, lines []line) {
			if got := stdout(lines); got != "a\nc\n" {
				t.Fatalf("stdout %q", got)
			}
			if e := ofType(lines, "stderr"); len(e) != 1 || e[0].str("text") != "b\n" || e[0].str("timestamp") == "" {
				t.Fatalf("stderr %v", e)
			}
		}},
		{"error", "1/0", nil, func(t *testing.T, lines []line) {
			e := ofType(lines, "error")
			if len(e) != 1 || e[0].str("name") != "ZeroDivisionError" || e[0].str("value") != "division by zero" || !strings.Contains(e[0].str("traceback"), "ZeroDivisionError") {
				t.Fatalf("errors %v", e)
			}
		}},
		{"execution count", "None", nil, func(t *testing.T, lines []line) {
			n := ofType(lines, "number_of_executions")
			if len(n) != 1 || n[0]["execution_count"].(float64) < 2 {
				t.Fatalf("number_of_executions %v", n)
			}
			if len(ofType(lines, "result")) != 0 {
				t.Fatal("None produced a result")
			}
		}},
		{"rich display and extra mime", "from IPython.display import display\n" +
			"class R:\n  def _repr_mimebundle_(self, **kw): return {'text/plain': 'r', 'text/html': '<i>r</i>', 'application/json': {'a': 1}, 'application/x-custom': 'c'}\n" +
			"display(R())", nil, func(t *testing.T, lines []line) {
			r := ofType(lines, "result")
			if len(r) != 1 || r[0]["is_main_result"] != false || r[0].str("html") != "<i>r</i>" {
				t.Fatalf("results %v", r)
			}
			if js, _ := r[0]["json"].(map[string]any); js["a"] != 1.0 {
				t.Fatalf("json %v", r[0]["json"])
			}
			if ex, _ := r[0]["extra"].(map[string]any); ex["application/x-custom"] != "c" {
				t.Fatalf("extra %v", r[0]["extra"])
			}
		}},
		{"matplotlib png", "import matplotlib.pyplot as plt\nplt.plot([1,2,3])\nplt.show()", []string{"matplotlib"}, func(t *testing.T, lines []line) {
			r := ofType(lines, "result")
			if len(r) != 1 {
				t.Fatalf("results %v", lines)
			}
			png, err := base64.StdEncoding.DecodeString(r[0].str("png"))
			if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
				t.Fatalf("png not a PNG (err %v)", err)
			}
		}},
		{"pandas html", "import pandas as pd\npd.DataFrame({'a': [1, 2]})", []string{"pandas"}, func(t *testing.T, lines []line) {
			r := ofType(lines, "result")
			if len(r) != 1 || !strings.Contains(r[0].str("html"), "<table") {
				t.Fatalf("results %v", r)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requirePyModules(t, tt.modules...)
			tt.check(t, execute(t, ts.URL, map[string]any{"code": tt.code}))
		})
	}
}

func TestExecuteEnvVarsOneRunOnly(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	for _, lang := range []string{"python", "bash"} {
		t.Run(lang, func(t *testing.T) {
			read := map[string]string{
				"python": "import os; print(os.environ.get('SBX_T', 'unset'))",
				"bash":   "echo ${SBX_T-unset}",
			}[lang]
			val := `it's "quoted" $HOME`
			got := stdout(execute(t, ts.URL, map[string]any{"code": read, "language": lang, "env_vars": map[string]string{"SBX_T": val}}))
			if got != val+"\n" {
				t.Fatalf("with env_vars: %q", got)
			}
			if got := stdout(execute(t, ts.URL, map[string]any{"code": read, "language": lang})); got != "unset\n" {
				t.Fatalf("env leaked into next run: %q", got)
			}
		})
	}
}

func TestBash(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	run := func(code string) []line {
		return execute(t, ts.URL, map[string]any{"code": code, "language": "bash"})
	}
	run("V=persist; cd /")
	if got := stdout(run("echo $V; pwd")); got != "persist\n/\n" {
		t.Fatalf("bash state: %q", got)
	}
	lines := run("echo out; echo err >&2; exit_code() { return 3; }; exit_code")
	if stdout(lines) != "out\n" || len(ofType(lines, "stderr")) != 1 {
		t.Fatalf("bash output %v", lines)
	}
	if e := ofType(lines, "error"); len(e) != 1 || e[0].str("value") != "3" {
		t.Fatalf("bash error %v", e)
	}
	// Output without a trailing newline and a marker-like string survive.
	if got := stdout(run("printf 'no newline \\036SBX'")); got != "no newline \x1eSBX" {
		t.Fatalf("partial output %q", got)
	}
	// `exit` kills the shell: an error line, then a fresh shell next time.
	if e := ofType(run("exit 1"), "error"); len(e) != 1 || e[0].str("name") != "UnexpectedEndOfExecution" {
		t.Fatalf("exit: %v", e)
	}
	if got := stdout(run("echo again")); got != "again\n" {
		t.Fatalf("after exit %q", got)
	}
}

func TestContexts(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	create := func(body string) Context {
		resp, err := http.Post(ts.URL+"/contexts", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var c Context
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&c) != nil || c.ID == "" {
			t.Fatalf("create context: %s", resp.Status)
		}
		return c
	}
	a, b := create(`{"language":"python"}`), create(`{"cwd":"/"}`)
	if b.Cwd != "/" || b.Language != "python" {
		t.Fatalf("context b = %+v", b)
	}
	execute(t, ts.URL, map[string]any{"code": "secret = 42", "context_id": a.ID})
	if e := ofType(execute(t, ts.URL, map[string]any{"code": "secret", "context_id": b.ID}), "error"); len(e) != 1 || e[0].str("name") != "NameError" {
		t.Fatalf("contexts share state: %v", e)
	}
	if got := stdout(execute(t, ts.URL, map[string]any{"code": "import os; print(os.getcwd())", "context_id": b.ID})); got != "/\n" {
		t.Fatalf("cwd %q", got)
	}

	resp := post(t, ts.URL+"/contexts/"+a.ID+"/restart", nil)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("restart: %s", resp.Status)
	}
	if e := ofType(execute(t, ts.URL, map[string]any{"code": "secret", "context_id": a.ID}), "error"); len(e) != 1 || e[0].str("name") != "NameError" {
		t.Fatalf("restart kept state: %v", e)
	}

	list := func() []string {
		resp, err := http.Get(ts.URL + "/contexts")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var cs []Context
		_ = json.NewDecoder(resp.Body).Decode(&cs)
		var ids []string
		for _, c := range cs {
			ids = append(ids, c.Language+":"+c.ID)
		}
		return ids
	}
	// The default contexts, then a and b, in creation order.
	if ids, want := list(), []string{"python:", "javascript:", "python:" + a.ID, "python:" + b.ID}; len(ids) != len(want) ||
		!strings.HasPrefix(ids[0], want[0]) || !strings.HasPrefix(ids[1], want[1]) || ids[2] != want[2] || ids[3] != want[3] {
		t.Fatalf("contexts %v, want %v", ids, want)
	}
	req, _ := http.NewRequest(http.MethodDelete, ts.URL+"/contexts/"+a.ID, nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("delete: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if ids := list(); len(ids) != 3 {
		t.Fatalf("after delete %v", ids)
	}

	tests := []struct {
		name, method, path, body string
		status                   int
	}{
		{"unknown context", "POST", "/execute", `{"code":"1","context_id":"nope"}`, 404},
		{"deleted context", "POST", "/execute", `{"code":"1","context_id":"` + a.ID + `"}`, 404},
		{"both context and language", "POST", "/execute", `{"code":"1","context_id":"` + b.ID + `","language":"python"}`, 400},
		{"bad json", "POST", "/execute", `{`, 400},
		{"unknown language", "POST", "/execute", `{"code":"1","language":"cobol"}`, 400},
		{"bad cwd", "POST", "/contexts", `{"cwd":"/does/not/exist"}`, 400},
		{"restart unknown", "POST", "/contexts/nope/restart", ``, 404},
		{"delete unknown", "DELETE", "/contexts/nope", ``, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, ts.URL+tt.path, strings.NewReader(tt.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || len(msg) == 0 {
				t.Fatalf("%s %s: %d %q, want %d with a message", tt.method, tt.path, resp.StatusCode, msg, tt.status)
			}
		})
	}
}

func TestAccessToken(t *testing.T) {
	_, ts := newTestServer(t, Config{AccessToken: "s3cret"})
	for _, tc := range []struct {
		token  string
		status int
	}{{"", 401}, {"wrong", 401}, {"s3cret", 200}} {
		resp := post(t, ts.URL+"/execute", map[string]any{"code": "1"}, "X-Access-Token", tc.token)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("token %q: %d, want %d", tc.token, resp.StatusCode, tc.status)
		}
	}
	// Only /execute is protected, as the SDK sends the token nowhere else.
	resp, err := http.Get(ts.URL + "/contexts")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/contexts without token: %s", resp.Status)
	}
}

// A client that goes away interrupts its execution; the context stays
// usable and keeps its state.
func TestClientDisconnectInterrupts(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	execute(t, ts.URL, map[string]any{"code": "kept = 'yes'"})
	abandonRun(t, ts.URL, map[string]any{"code": "import time\nprint('loop', flush=True)\nwhile True: time.sleep(0.05)"}, "loop")
	// The next run waits for the interrupted one to finish, then works.
	lines := execute(t, ts.URL, map[string]any{"code": "kept"})
	if r := ofType(lines, "result"); len(r) != 1 || r[0].str("text") != "yes" {
		t.Fatalf("after disconnect: %v", lines)
	}
}

func TestKernelDeathEndsStream(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	lines := execute(t, ts.URL, map[string]any{"code": "import os\nprint('bye', flush=True)\nos._exit(1)"})
	if e := ofType(lines, "error"); len(e) != 1 || e[0].str("name") != "UnexpectedEndOfExecution" {
		t.Fatalf("lines %v", lines)
	}
	// The context comes back with a fresh kernel.
	if got := stdout(execute(t, ts.URL, map[string]any{"code": "print('back')"})); got != "back\n" {
		t.Fatalf("after death %q", got)
	}
}

func TestConcurrentContexts(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				want := strings.Repeat("x", i+1)
				if got := stdout(execute(t, ts.URL, map[string]any{"code": "print('" + want + "')"})); got != want+"\n" {
					t.Errorf("got %q want %q", got, want)
				}
			}
		}()
	}
	wg.Wait()
}

func TestResultLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		data string
		want string
	}{
		{"double quotes", `{"text/plain":"\"hi\""}`, `{"is_main_result":true,"text":"hi","type":"result"}`},
		{"single char quote kept", `{"text/plain":"'"}`, `{"is_main_result":true,"text":"'","type":"result"}`},
		{"mismatched quotes kept", `{"text/plain":"'a\""}`, `{"is_main_result":true,"text":"'a\"","type":"result"}`},
		{"list text", `{"text/plain":["a","b"]}`, `{"is_main_result":true,"text":"ab","type":"result"}`},
		{"all known", `{"text/markdown":"m","image/svg+xml":"<svg/>","image/jpeg":"j","application/pdf":"p","text/latex":"l","application/javascript":"js","e2b/chart":{"type":"line"}}`,
			`{"chart":{"type":"line"},"is_main_result":true,"javascript":"js","jpeg":"j","latex":"l","markdown":"m","pdf":"p","svg":"<svg/>","type":"result"}`},
		{"extra", `{"application/vnd.custom+json":{"x":1}}`, `{"extra":{"application/vnd.custom+json":{"x":1}},"is_main_result":true,"type":"result"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var data map[string]json.RawMessage
			if err := json.Unmarshal([]byte(tt.data), &data); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false) // as the server writes it
			_ = enc.Encode(resultLine(data, true))
			if got := strings.TrimSpace(buf.String()); got != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestScanMarker(t *testing.T) {
	t.Parallel()
	const m = "\x1eSBXab:"
	tests := []struct {
		name     string
		chunks   []string
		text     string
		status   int
		finished bool
	}{
		{"whole", []string{"out" + m + "7\x1e"}, "out", 7, true},
		{"split marker", []string{"out\x1eSB", "Xab:0\x1e"}, "out", 0, true},
		{"split status", []string{"o" + m + "1", "2\x1e"}, "o", 12, true},
		{"lookalike", []string{"a\x1eSBXzz", "b"}, "a\x1eSBXzzb", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			var text string
			var status int
			var finished bool
			for _, c := range tt.chunks {
				buf.WriteString(c)
				var s string
				s, status, finished = scanMarker(&buf, m)
				text += s
			}
			if text != tt.text || status != tt.status || finished != tt.finished {
				t.Fatalf("got %q %d %v", text, status, finished)
			}
		})
	}
}

// Without a configured token, envd judges X-Access-Token (as in E2B, where
// the server forwards it to envd's /envs), and the sandbox's global env
// vars it returns reach the code.
func TestAccessTokenCheckedByEnvd(t *testing.T) {
	var calls int
	var mu sync.Mutex
	envd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		if r.URL.Path != "/envs" || r.Header.Get("X-Access-Token") != "good" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, `{"SBX_GLOBAL":"from-envd"}`)
	}))
	defer envd.Close()
	_, ts := newTestServer(t, Config{EnvdURL: envd.URL})
	for _, tc := range []struct {
		token  string
		status int
	}{{"", 401}, {"bad", 401}, {"good", 200}, {"good", 200}} {
		resp := post(t, ts.URL+"/execute", map[string]any{"code": "1"}, "X-Access-Token", tc.token)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("token %q: %d, want %d", tc.token, resp.StatusCode, tc.status)
		}
	}
	mu.Lock()
	// Start's fetch without a token, "", "bad", then "good" once: the
	// accepted token is remembered.
	if calls != 4 {
		t.Errorf("envd asked %d times, want 4", calls)
	}
	mu.Unlock()
	got := stdout(execute(t, ts.URL, map[string]any{"code": "import os; print(os.environ.get('SBX_GLOBAL'))"}, "X-Access-Token", "good"))
	if got != "from-envd\n" {
		t.Fatalf("global env var in code: %q", got)
	}
}

// A pooled or snapshot-restored sandbox starts the code interpreter before
// /init gives the sandbox its token and env vars: envd first answers
// without a token with the pre-claim env, later only to the sandbox's token
// with the claimed env. The first run after the claim must see the new env,
// also in the default kernel that started before it.
func TestEnvRefreshedAfterClaim(t *testing.T) {
	var mu sync.Mutex
	token, env := "", `{"E2B_SANDBOX_ID":"snapshot","ONLY_BEFORE":"x"}`
	envd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if token != "" && r.Header.Get("X-Access-Token") != token {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, env)
	}))
	defer envd.Close()
	s, ts := newTestServer(t, Config{EnvdURL: envd.URL})
	code := map[string]any{"code": "import os; print(os.environ.get('E2B_SANDBOX_ID'), os.environ.get('FOO'))"}
	if got := stdout(execute(t, ts.URL, code)); got != "snapshot None\n" {
		t.Fatalf("before the claim: %q", got)
	}
	mu.Lock()
	token, env = "claimed-token", `{"E2B_SANDBOX_ID":"clone1","FOO":"bar"}`
	mu.Unlock()
	if got := stdout(execute(t, ts.URL, code, "X-Access-Token", "claimed-token")); got != "clone1 bar\n" {
		t.Fatalf("first run after the claim sees %q, want the claimed sandbox's env", got)
	}
	// Set for good, once: no helper names left in the user's namespace, and a
	// run's own env_vars still override it for that run only.
	left := map[string]any{"code": "print(sorted(n for n in dir() if n.startswith('__sbx')))"}
	if got := stdout(execute(t, ts.URL, left, "X-Access-Token", "claimed-token")); got != "[]\n" {
		t.Errorf("names left in the kernel: %q", got)
	}
	perRun := map[string]any{"code": code["code"], "env_vars": map[string]string{"FOO": "per-run"}}
	if got := stdout(execute(t, ts.URL, perRun, "X-Access-Token", "claimed-token")); got != "clone1 per-run\n" {
		t.Errorf("run with its own FOO: %q", got)
	}
	if got := stdout(execute(t, ts.URL, code, "X-Access-Token", "claimed-token")); got != "clone1 bar\n" {
		t.Errorf("after a run with its own FOO: %q, want the sandbox's back", got)
	}
	bash := map[string]any{"code": "echo $E2B_SANDBOX_ID $FOO", "language": "bash"}
	if got := stdout(execute(t, ts.URL, bash, "X-Access-Token", "claimed-token")); got != "clone1 bar\n" {
		t.Fatalf("bash after the claim sees %q", got)
	}
	// A restarted Python context keeps the sandbox's env.
	c, err := s.defaultContext(t.Context(), "python")
	if err != nil {
		t.Fatal(err)
	}
	resp := post(t, ts.URL+"/contexts/"+c.ID+"/restart", nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("restart: %s", resp.Status)
	}
	if got := stdout(execute(t, ts.URL, code, "X-Access-Token", "claimed-token")); got != "clone1 bar\n" {
		t.Errorf("after a restart: %q, want the sandbox's env", got)
	}
}

func TestPreload(t *testing.T) {
	_, ts := newTestServer(t, Config{Preload: []string{"wave", "no_such_module_sbx"}})
	lines := execute(t, ts.URL, map[string]any{"code": "import sys\nprint('wave' in sys.modules, [n for n in dir() if n.startswith('__sbx')])"})
	if got := stdout(lines); got != "True []\n" {
		t.Fatalf("preload: %q", got)
	}
	// Preloading is silent: the user's first run is execution 1.
	if n := ofType(lines, "number_of_executions"); len(n) != 1 || n[0]["execution_count"] != 1.0 {
		t.Fatalf("number_of_executions %v", n)
	}
}

func TestBashClientDisconnectInterrupts(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	execute(t, ts.URL, map[string]any{"code": "KEPT=yes", "language": "bash"})
	abandonRun(t, ts.URL, map[string]any{"code": "echo started; for i in 1 2 3; do sleep 100; done; REACHED=1", "language": "bash"}, "started")
	// The whole cell is aborted (not just one sleep: the loop and the rest
	// never run) and the shell keeps its variables.
	done := make(chan string, 1)
	go func() {
		done <- stdout(execute(t, ts.URL, map[string]any{"code": "echo $KEPT ${REACHED-unset}", "language": "bash"}))
	}()
	select {
	case got := <-done:
		if got != "yes unset\n" {
			t.Fatalf("after interrupt: %q", got)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the interrupted sleep kept the shell busy")
	}
}

// A silent run gets keepalive lines, and they never follow end_of_execution.
func TestKeepalive(t *testing.T) {
	_, ts := newTestServer(t, Config{Keepalive: 100 * time.Millisecond})
	lines := execute(t, ts.URL, map[string]any{"code": "import time\ntime.sleep(1)\n'done'"})
	if len(ofType(lines, "keepalive")) == 0 {
		t.Fatalf("no keepalive during a silent second: %v", lines)
	}
	if r := ofType(lines, "result"); len(r) != 1 || r[0].str("text") != "done" {
		t.Fatalf("result %v", r)
	}
	if n := ofType(lines, "number_of_executions"); len(n) != 1 || lines[0].str("type") != "number_of_executions" {
		t.Fatalf("number_of_executions must come first: %v", lines)
	}
}

func TestJavaScript(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		testenv.Skip(t, "node not installed (apt-get install nodejs)")
	}
	_, ts := newTestServer(t, Config{})
	run := func(code string, env map[string]string) []line {
		return execute(t, ts.URL, map[string]any{"code": code, "language": "js", "env_vars": env})
	}
	tests := []struct {
		name, code   string
		env          map[string]string
		stdout, text string
		errName      string
	}{
		{"declare and print", "const x = 40; console.log('hi'); x + 2", nil, "hi\n", "42", ""},
		{"state persists", "x * 2", nil, "", "80", ""},
		{"string result unquoted", "'str'", nil, "", "str", ""},
		{"object result", "({a: 1})", nil, "", "{ a: 1 }", ""},
		{"promise awaited", "new Promise(r => setTimeout(() => r(7), 20))", nil, "", "7", ""},
		{"error", "null.x", nil, "", "", "TypeError"},
		{"env for one run", "process.env.SBX_JS", map[string]string{"SBX_JS": "v"}, "", "v", ""},
		{"env restored", "String(process.env.SBX_JS)", nil, "", "undefined", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lines := run(tt.code, tt.env)
			if got := stdout(lines); got != tt.stdout {
				t.Errorf("stdout %q, want %q", got, tt.stdout)
			}
			var text string
			if r := ofType(lines, "result"); len(r) == 1 {
				text = r[0].str("text")
			}
			if text != tt.text {
				t.Errorf("result %q, want %q (%v)", text, tt.text, lines)
			}
			var ename string
			if e := ofType(lines, "error"); len(e) == 1 {
				ename = e[0].str("name")
			}
			if ename != tt.errName {
				t.Errorf("error %q, want %q", ename, tt.errName)
			}
		})
	}

	// A client that gives up interrupts even a busy loop; state survives.
	abandonRun(t, ts.URL, map[string]any{"code": "console.log('spin'); while (true) {}", "language": "js"}, "spin")
	if lines := run("x", nil); len(ofType(lines, "result")) != 1 || ofType(lines, "result")[0].str("text") != "40" {
		t.Fatalf("after interrupt, x gave %v", lines)
	}
}

// abandonRun starts a run and leaves it, as a client that gives up does,
// once a line of its output contains seen.
func abandonRun(t *testing.T, url string, body map[string]any, seen string) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/execute", bytes.NewReader(b))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && !strings.Contains(sc.Text(), seen) {
	}
}
