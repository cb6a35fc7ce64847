package cli

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeCodeServer is a stand-in for sbx serve's API plus a sandbox's code
// interpreter: enough to drive `sbx run-code` end to end over HTTP.
type fakeCodeServer struct {
	mu       sync.Mutex
	template string
	killed   []string
	code     string
	headers  http.Header
}

func (f *fakeCodeServer) handler(t *testing.T) http.Handler {
	img := image.NewRGBA(image.Rect(0, 0, 2, 2))
	img.Set(0, 0, color.RGBA{255, 0, 0, 255})
	var pngBuf bytes.Buffer
	if err := png.Encode(&pngBuf, img); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v2/sandboxes", func(w http.ResponseWriter, r *http.Request) {
		var body struct{ TemplateID string }
		_ = json.NewDecoder(r.Body).Decode(&body)
		f.mu.Lock()
		f.template = body.TemplateID
		f.mu.Unlock()
		_, _ = io.WriteString(w, `{"sandboxID":"sbx1","templateID":"code-interpreter","envdVersion":"0.6.13","envdAccessToken":"tok"}`)
	})
	mux.HandleFunc("POST /v2/sandboxes/{id}/connect", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"sandboxID":"`+r.PathValue("id")+`","templateID":"code-interpreter","envdVersion":"0.6.13","envdAccessToken":"tok"}`)
	})
	mux.HandleFunc("DELETE /sandboxes/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.killed = append(f.killed, r.PathValue("id"))
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /execute", func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Code string }
		_ = json.NewDecoder(r.Body).Decode(&body)
		f.mu.Lock()
		f.code, f.headers = body.Code, r.Header.Clone()
		f.mu.Unlock()
		enc := json.NewEncoder(w)
		_ = enc.Encode(map[string]any{"type": "stdout", "text": "printed\n", "timestamp": "2026-01-01T00:00:00Z"})
		_ = enc.Encode(map[string]any{"type": "result", "is_main_result": false, "png": base64.StdEncoding.EncodeToString(pngBuf.Bytes()), "svg": "<svg/>", "text": "<Figure>"})
		_ = enc.Encode(map[string]any{"type": "result", "is_main_result": true, "text": "42"})
		if strings.Contains(body.Code, "raise") {
			_ = enc.Encode(map[string]any{"type": "error", "name": "ValueError", "value": "boom", "traceback": "Traceback: ValueError: boom"})
		}
		_ = enc.Encode(map[string]any{"type": "end_of_execution"})
	})
	return mux
}

func runRunCode(t *testing.T, f *fakeCodeServer, stdin string, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	srv := httptest.NewServer(f.handler(t))
	t.Cleanup(srv.Close)
	exitCode = -1
	cmd := runCodeCmd(func(c int) { exitCode = c })
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(append([]string{"--api-url", srv.URL, "--api-key", "e2b_00"}, args...))
	if err := cmd.Execute(); err != nil {
		t.Fatalf("run-code: %v (stderr %s)", err, errb.String())
	}
	return out.String(), errb.String(), exitCode
}

func TestRunCodeCreatesRunsSavesAndKills(t *testing.T) {
	t.Parallel()
	f := &fakeCodeServer{}
	dir := t.TempDir()
	stdout, stderr, code := runRunCode(t, f, "print('printed')\n42", "--out-dir", dir)
	if code != -1 {
		t.Fatalf("exit called with %d", code)
	}
	if stdout != "printed\n42\n" {
		t.Fatalf("stdout %q", stdout)
	}
	if f.template != "code-interpreter" || f.code != "print('printed')\n42" || len(f.killed) != 1 || f.killed[0] != "sbx1" {
		t.Fatalf("server saw template %q code %q killed %v", f.template, f.code, f.killed)
	}
	if f.headers.Get("E2b-Sandbox-Port") != "49999" || f.headers.Get("X-Access-Token") != "tok" {
		t.Fatalf("headers %v", f.headers)
	}
	pngFile := filepath.Join(dir, "result-1.png")
	fh, err := os.Open(pngFile)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := png.Decode(fh); err != nil {
		t.Fatalf("saved PNG does not decode: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "result-1.svg")); string(b) != "<svg/>" {
		t.Fatalf("svg %q", b)
	}
	if !strings.Contains(stderr, "Saved "+pngFile) {
		t.Fatalf("stderr %q", stderr)
	}
}

func TestRunCodeErrorAndReuse(t *testing.T) {
	t.Parallel()
	f := &fakeCodeServer{}
	dir := t.TempDir()
	code := filepath.Join(dir, "x.py")
	if err := os.WriteFile(code, []byte("raise ValueError('boom')"), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, exit := runRunCode(t, f, "", "--sandbox", "sbx1", "--json", "--out-dir", filepath.Join(dir, "out"), code)
	if exit != 1 {
		t.Fatalf("exit %d, want 1 for an error in the code", exit)
	}
	if f.template != "" || len(f.killed) != 0 {
		t.Fatalf("--sandbox must neither create nor kill: template %q killed %v", f.template, f.killed)
	}
	var out runCodeOutput
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("--json output %q: %v", stdout, err)
	}
	if out.Execution.Error == nil || out.Execution.Error.Name != "ValueError" || len(out.Files) != 2 || out.SandboxID != "sbx1" {
		t.Fatalf("json %+v", out)
	}
	if stderr != "" {
		t.Fatalf("--json wrote to stderr: %q", stderr)
	}
}

func TestRunCodeBadInput(t *testing.T) {
	t.Parallel()
	cmd := runCodeCmd(func(int) {})
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	cmd.SetArgs([]string{"--api-key", "e2b_00", "/does/not/exist.py"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "'-' to read stdin") {
		t.Fatalf("missing file: %v", err)
	}
}
