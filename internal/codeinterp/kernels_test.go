package codeinterp

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbxdev/sbx/internal/codeinterp/jupyter"
	"github.com/sbxdev/sbx/internal/testenv"
)

// requireJSKernel skips (fails under SBX_REQUIRE_INTEGRATION=1) without
// node and the libraries driver/node_kernel.js loads.
func requireJSKernel(t *testing.T, typescript bool) {
	t.Helper()
	_, err := exec.LookPath("node")
	need(t, err == nil, "node (apt-get install nodejs)")
	need(t, fileExists("/usr/share/nodejs/acorn/package.json"), "acorn for the JavaScript kernel (apt-get install node-acorn)")
	if typescript {
		need(t, fileExists("/usr/share/nodejs/@babel/core/package.json"), "Babel for TypeScript (apt-get install node-babel7)")
	}
}

// need skips (fails under SBX_REQUIRE_INTEGRATION=1) unless ok.
func need(t *testing.T, ok bool, what string) {
	t.Helper()
	if !ok {
		testenv.Skip(t, "needs %s", what)
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// cell is one run of a table: its code and what it must give.
type cell struct {
	name, code, stdout, text, errName, errValue string
}

func runCells(t *testing.T, base, lang string, cells []cell) {
	t.Helper()
	for _, c := range cells {
		lines := execute(t, base, map[string]any{"code": c.code, "language": lang})
		var text, ename, evalue, tb string
		if r := ofType(lines, "result"); len(r) == 1 {
			text = r[0].str("text")
		}
		if e := ofType(lines, "error"); len(e) == 1 {
			ename, evalue, tb = e[0].str("name"), e[0].str("value"), e[0].str("traceback")
		}
		if got := stdout(lines); got != c.stdout {
			t.Errorf("%s: stdout %q, want %q", c.name, got, c.stdout)
		}
		if text != c.text || ename != c.errName || !strings.Contains(evalue, c.errValue) {
			t.Errorf("%s: result %q error %s: %q (%s), want result %q error %s containing %q", c.name, text, ename, evalue, tb, c.text, c.errName, c.errValue)
		}
	}
}

func TestJavaScriptModulesAndAwait(t *testing.T) {
	requireJSKernel(t, false)
	cwd := t.TempDir()
	// Installed packages, as npm would lay them out: an ES module that only
	// exports through "exports", and a CommonJS one.
	writeFiles(t, cwd, map[string]string{
		"node_modules/esm-only/package.json": `{"name":"esm-only","type":"module","exports":{".":{"import":"./index.js"},"./extra":"./extra.js"}}`,
		"node_modules/esm-only/index.js":     `export const greet = (n) => "hi " + n; export default 41`,
		"node_modules/esm-only/extra.js":     `export const extra = "x"`,
		"node_modules/cjs-pkg/package.json":  `{"name":"cjs-pkg","main":"lib.js"}`,
		"node_modules/cjs-pkg/lib.js":        `module.exports = { twice: (x) => 2 * x }`,
		"local.mjs":                          `export const local = "here"`,
	})
	_, ts := newTestServer(t, Config{DefaultCwd: cwd})
	runCells(t, ts.URL, "javascript", []cell{
		{name: "built-in import", code: "import { join } from 'node:path'\nimport fs from 'fs'\njoin('a', 'b') + (typeof fs.readFileSync)", text: "a/bfunction"},
		{name: "imports stay bound", code: "join('c', 'd')", text: "c/d"},
		{name: "ESM package", code: "import answer, { greet } from 'esm-only'\ngreet('ann') + ' ' + (answer + 1)", text: "hi ann 42"},
		{name: "package subpath", code: "import { extra } from 'esm-only/extra'; extra", text: "x"},
		{name: "Deno's npm: specifier", code: "import answer from 'npm:esm-only@1.0.0'; answer", text: "41"},
		{name: "CommonJS package", code: "import cjs from 'cjs-pkg'\ncjs.twice(21)", text: "42"},
		{name: "require", code: "require('cjs-pkg').twice(2)", text: "4"},
		{name: "namespace import of a relative file", code: "import * as m from './local.mjs'; m.local", text: "here"},
		{name: "dynamic import", code: "const { greet: g } = await import('esm-only'); g('bo')", text: "hi bo"},
		{name: "top-level await", code: "const v = await new Promise((r) => setTimeout(() => r(5), 10))\nconsole.log('waited')\nv * 2", stdout: "waited\n", text: "10"},
		{name: "awaited value persists", code: "v + 1", text: "6"},
		{name: "const declared again", code: "const v = 'again'; v", text: "again"},
		{name: "function from an async cell", code: "function sq(x) { return x * x }\nawait null\nsq(3)", text: "9"},
		{name: "function in a later cell", code: "sq(4)", text: "16"},
		{name: "class", code: "class P { constructor(n) { this.n = n } }\nnew P(3).n", text: "3"},
		{name: "class declared again", code: "class P { get n() { return 'new' } }\nnew P().n", text: "new"},
		{name: "object literal", code: "{ a: 1, b: [2] }", text: "{ a: 1, b: [ 2 ] }"},
		{name: "statement has no result", code: "let none = 1", text: ""},
		{name: "missing export", code: "import { nope } from 'esm-only'", errName: "SyntaxError", errValue: "does not provide an export named 'nope'"},
		{name: "missing package", code: "import x from 'not-installed'", errName: "Error", errValue: "Cannot find package 'not-installed'"},
		{name: "rejected await", code: "await Promise.reject(new RangeError('bad'))", errName: "RangeError", errValue: "bad"},
		{name: "syntax error", code: "const = 1", errName: "SyntaxError", errValue: "Unexpected token"},
	})

	// A cell that ends the process: its last words, then the error; the
	// next run gets a fresh process.
	lines := execute(t, ts.URL, map[string]any{"code": "console.error('bye'); process.exit(3)", "language": "js"})
	if e := ofType(lines, "error"); len(e) != 1 || e[0].str("name") != "UnexpectedEndOfExecution" {
		t.Fatalf("exit: %v", lines)
	}
	if s := ofType(lines, "stderr"); len(s) == 0 || !strings.Contains(s[0].str("text"), "bye") {
		t.Errorf("exit lost the process's last output: %v", lines)
	}
	runCells(t, ts.URL, "javascript", []cell{{name: "after exit", code: "typeof sq", text: "undefined"}})

	// A runtime error's traceback points into the cell, not into the driver.
	lines = execute(t, ts.URL, map[string]any{"code": "function boom() { null.x }\nboom()", "language": "js"})
	e := ofType(lines, "error")
	if len(e) != 1 || e[0].str("name") != "TypeError" || !strings.Contains(e[0].str("traceback"), "at boom (<cell") || strings.Contains(e[0].str("traceback"), "node_kernel.js") {
		t.Fatalf("error %v", e)
	}
}

func TestTypeScript(t *testing.T) {
	requireJSKernel(t, true)
	_, ts := newTestServer(t, Config{})
	runCells(t, ts.URL, "ts", []cell{
		{name: "interface and annotations", code: "interface Person { name: string; age?: number }\nconst p: Person = { name: 'Ann' }\nfunction hello(x: Person): string { return `hello ${x.name}` }\nhello(p)", text: "hello Ann"},
		{name: "state across cells", code: "p.age ?? -1", text: "-1"},
		{name: "enum and generics", code: "enum Color { Red, Green }\nconst id = <T,>(x: T): T => x\nid<number>(Color.Green)", text: "1"},
		{name: "type-only import removed, value import kept", code: "import type { Stats } from 'fs'\nimport { existsSync } from 'fs'\nconst s: Stats | null = null\ntypeof existsSync", text: "function"},
		{name: "top-level await with types", code: "const n = await Promise.resolve(2 as number)\nn * 21", text: "42"},
		{name: "syntax error", code: "const x: = 1", errName: "SyntaxError", errValue: "Unexpected token"},
	})
	// The context reports the language it was created with.
	resp := post(t, ts.URL+"/contexts", map[string]any{"language": "typescript"})
	defer resp.Body.Close()
	var c Context
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil || c.Language != "typescript" {
		t.Fatalf("context %+v %v", c, err)
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestR(t *testing.T) {
	_, err := jupyter.LoadSpec(jupyter.DefaultKernelDirs, "ir")
	need(t, err == nil, "the R kernel (apt-get install r-base-core r-cran-irkernel)")
	_, ts := newTestServer(t, Config{})
	run := func(code string, env map[string]string) []line {
		return execute(t, ts.URL, map[string]any{"code": code, "language": "r", "env_vars": env})
	}
	if r := ofType(run("1+1", nil), "result"); len(r) != 1 || r[0].str("text") != "[1] 2" {
		t.Fatalf("1+1: %v", r)
	}
	if r := ofType(run(`x <- 40; x + 2`, nil), "result"); len(r) != 1 || r[0].str("text") != "[1] 42" {
		t.Fatalf("x + 2: %v", r)
	}
	if r := ofType(run("x", nil), "result"); len(r) != 1 || r[0].str("text") != "[1] 40" {
		t.Fatalf("state: %v", r)
	}
	// Env vars apply to one run; quotes and backslashes reach R intact.
	val := `it's "quoted" \ here`
	if r := ofType(run(`Sys.getenv("SBX_R")`, map[string]string{"SBX_R": val}), "result"); len(r) != 1 || r[0].str("text") != `[1] "it's \"quoted\" \\ here"` {
		t.Fatalf("env var: %v", r)
	}
	if r := ofType(run(`Sys.getenv("SBX_R", unset = "unset")`, nil), "result"); len(r) != 1 || r[0].str("text") != `[1] "unset"` {
		t.Fatalf("env var after the run: %v", r)
	}
	if e := ofType(run("stop('bad')", nil), "error"); len(e) != 1 || !strings.Contains(e[0].str("value"), "bad") {
		t.Fatalf("error: %v", e)
	}
}

func TestUnavailableLanguage(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	for _, path := range []string{"/execute", "/contexts"} {
		resp := post(t, ts.URL+path, map[string]any{"code": "1", "language": "java"})
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(msg), `"java"`) ||
			!strings.Contains(string(msg), "python") || !strings.Contains(string(msg), "bash") {
			t.Errorf("%s java: %d %q, want 400 naming the available languages", path, resp.StatusCode, msg)
		}
	}
}

// Kernels run as the server's user unless a context names another one.
func TestContextUser(t *testing.T) {
	testenv.Require(t, testenv.Root) // kernels run as other users only under a root server
	_, ts := newTestServer(t, Config{})
	create := func(body map[string]any) (Context, int, string) {
		resp := post(t, ts.URL+"/contexts", body)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var c Context
		_ = json.Unmarshal(b, &c)
		return c, resp.StatusCode, string(b)
	}
	uid := func(c Context, code string) string {
		return strings.TrimSpace(stdout(execute(t, ts.URL, map[string]any{"code": code, "context_id": c.ID})))
	}
	if got := stdout(execute(t, ts.URL, map[string]any{"code": "import os; print(os.getuid())"})); got != "0\n" {
		t.Errorf("default context runs as uid %q, want 0", got)
	}
	root, code, msg := create(map[string]any{"cwd": "/root"})
	if code != 200 {
		t.Fatalf("cwd /root: %d %s", code, msg)
	}
	if got := uid(root, "import os; print(os.getcwd())"); got != "/root" {
		t.Errorf("cwd %q", got)
	}
	probes := map[string]string{
		"python":     "import os; print(os.getuid(), os.environ['HOME'], os.environ['USER'])",
		"javascript": "console.log(process.getuid(), process.env.HOME, process.env.USER)",
		"bash":       "echo $(id -u) $HOME $USER",
	}
	for lang, probe := range probes {
		if lang == "javascript" {
			requireJSKernel(t, false)
		}
		c, code, msg := create(map[string]any{"language": lang, "user": "nobody", "cwd": "/"})
		if code != 200 {
			t.Fatalf("%s as nobody: %d %s", lang, code, msg)
		}
		if got := uid(c, probe); got != "65534 /nonexistent nobody" {
			t.Errorf("%s as nobody: %q", lang, got)
		}
	}
	if _, code, msg := create(map[string]any{"user": "no-such-user"}); code != 400 || !strings.Contains(msg, "no-such-user") {
		t.Errorf("unknown user: %d %s", code, msg)
	}
}
