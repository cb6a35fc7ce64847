package codeinterp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

var cellFileRe = regexp.MustCompile(`\((<ipython-input-\d+-[0-9a-f]+>|\d+\.py),`)

// summary is what a user sees of a run, as compared between the Python
// drivers: the kinds of lines in order (consecutive stream text joined),
// result fields and error names. Tracebacks are compared by their last
// line, since file paths in them name each driver's own code.
func summary(lines []line) []string {
	var out []string
	for _, l := range lines {
		switch typ := l.str("type"); typ {
		case "number_of_executions":
			out = append(out, fmt.Sprintf("count %v", l["execution_count"]))
		case "stdout", "stderr":
			text := strings.ReplaceAll(l.str("text"), "\r\n", "\n")
			if n := len(out); n > 0 && strings.HasPrefix(out[n-1], typ+" ") {
				out[n-1] += text
				continue
			}
			out = append(out, typ+" "+text)
		case "result":
			var fields []string
			for k := range l {
				if k != "type" && k != "is_main_result" {
					fields = append(fields, k)
				}
			}
			slices.Sort(fields)
			s := fmt.Sprintf("result main=%v %v text=%q", l["is_main_result"], fields, l.str("text"))
			for _, f := range []string{"html", "markdown", "latex", "javascript", "svg"} {
				if v := l.str(f); v != "" {
					s += fmt.Sprintf(" %s=%q", f, v)
				}
			}
			if v, ok := l["json"]; ok {
				s += fmt.Sprintf(" json=%v", v)
			}
			out = append(out, s)
		case "error":
			// A SyntaxError names the cell's file: ipykernel names it by a
			// hash of the code (1278102326.py), IPython by the count.
			value := cellFileRe.ReplaceAllString(l.str("value"), "(CELL,")
			tb := strings.Split(strings.TrimSpace(l.str("traceback")), "\n")
			out = append(out, fmt.Sprintf("error %s: %s [%s]", l.str("name"), value, tb[len(tb)-1]))
		case "end_of_execution", "keepalive":
		default:
			out = append(out, typ)
		}
	}
	return out
}

// The runner must show users what the kernel showed them: the same
// results with every MIME type, streams, errors, counts, magics, shell
// commands and env vars. (Not a subprocess writing to fd 1: ipykernel
// forwards that from a thread, sometimes into the next cell's output;
// see TestPythonRunnerSubprocessOutput.) Each cell runs in a context of each driver, in
// order (state carries over), and the two must agree line for line.
func TestPythonDriversAgree(t *testing.T) {
	requireKernel(t)
	requirePyModules(t, "matplotlib", "pandas")
	cells := []struct {
		code string
		env  map[string]string
		want []string // when set, what both must show (a sanity check)
	}{
		{code: "1+1", want: []string{"count 1", `result main=true [text] text="2"`}},
		{code: "print('a'); import sys; print('b', file=sys.stderr); 'c'", want: []string{"count 2", "stdout a\n", "stderr b\n", `result main=true [text] text="c"`}},
		{code: "x = 5"},
		{code: "x * 2"},
		{code: "from IPython.display import display, HTML, Markdown, Latex, JSON, Javascript, SVG\n" +
			"display(HTML('<b>h</b>')); display(Markdown('**m**')); display(Latex(r'$x$'))\n" +
			"display(JSON({'k': [1, 2]})); display(Javascript('var a = 1')); display(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\"></svg>'))"},
		{code: "display(1); display('two'); 3"},
		{code: "1/0"},
		{code: "def f():\n    raise ValueError('bad')\nf()"},
		{code: "1 +"},
		{code: "%pwd"},
		{code: "%sbx_no_such_magic"},
		{code: "!echo from-shell"},
		{code: "input('name? ')"},
		{code: "import getpass; getpass.getpass()"},
		{code: "import os; os.environ.get('SBX_PARITY')", env: map[string]string{"SBX_PARITY": "set"}},
		{code: "import os; os.environ.get('SBX_PARITY', 'gone')"},
		{code: "import asyncio\nawait asyncio.sleep(0)\n'awaited'"},
		{code: "async def g():\n    yield 1\n[x async for x in g()]"},
		{code: "%time await asyncio.sleep(0)"},
		{code: "for i in range(3): print(i)"},
		{code: "print('no newline', end='')"},
		{code: "import pandas as pd\npd.DataFrame({'a': [1, 2]})"},
		{code: "import matplotlib.pyplot as plt\nplt.plot([1, 2], [3, 4])\nplt.title('t')\nplt.show()"},
		{code: "import numpy as np\nnp.float64('nan')"},
		{code: "In[1], Out[1], _"},
		{code: "import sys; sys.exit(3)"},
		{code: "get_ipython().execution_count"},
		{code: "2 + 2;"},
		{code: "'a;b'"},
		{code: "x = 1; x + 1  # ;"},
		{code: "x + 1;  # quiet"},
	}
	cwd := t.TempDir()
	run := func(driver string) [][]string {
		_, ts := newTestServer(t, Config{PythonDriver: driver, DefaultLanguages: []string{"python"}, DefaultCwd: cwd})
		var got [][]string
		for _, c := range cells {
			body := map[string]any{"code": c.code}
			if c.env != nil {
				body["env_vars"] = c.env
			}
			got = append(got, summary(execute(t, ts.URL, body)))
		}
		return got
	}
	kernel, runner := run(PythonKernel), run(PythonRunner)
	for i, c := range cells {
		if !reflect.DeepEqual(runner[i], kernel[i]) {
			t.Errorf("cell %d %q:\nrunner %q\nkernel %q", i, c.code, runner[i], kernel[i])
		}
		if c.want != nil && !reflect.DeepEqual(runner[i], c.want) {
			t.Errorf("cell %d %q: got %q, want %q", i, c.code, runner[i], c.want)
		}
	}
}

// Output reaches the client while the cell still runs, a partial line
// too: the cell waits for a file that the test makes only after it saw
// the output.
func TestPythonRunnerStreamsLive(t *testing.T) {
	for _, driver := range []string{PythonRunner, PythonKernel} {
		t.Run(driver, func(t *testing.T) {
			_, ts := newTestServer(t, Config{PythonDriver: driver, DefaultLanguages: []string{"python"}})
			gate := filepath.Join(t.TempDir(), "go")
			code := fmt.Sprintf("import os, time\nprint('partial', end='')\nwhile not os.path.exists(%q): time.sleep(0.01)\nprint(' done')", gate)
			resp := post(t, ts.URL+"/execute", map[string]any{"code": code})
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			var seen []string
			for sc.Scan() {
				var l line
				if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
					t.Fatal(err)
				}
				seen = append(seen, l.str("type")+" "+l.str("text"))
				if l.str("type") == "stdout" && strings.Contains(l.str("text"), "partial") {
					if err := os.WriteFile(gate, nil, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			if _, err := os.Stat(gate); err != nil {
				t.Fatalf("the partial line never came before the cell's end: %q", seen)
			}
			if got := strings.Join(seen, "|"); !strings.Contains(got, "stdout  done") {
				t.Fatalf("lines %q", seen)
			}
		})
	}
}

// SIGINT between cells (a late interrupt, or one aimed at a cell that had
// just ended) must not kill the runner or reach the next cell; SIGINT
// during a cell interrupts it, and the state survives.
func TestPythonRunnerSIGINT(t *testing.T) {
	ts, r := defaultPyRunner(t)
	execute(t, ts.URL, map[string]any{"code": "kept = 1"})
	pid := r.proc.cmd.Process.Pid
	for range 3 {
		if err := syscall.Kill(-pid, syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
	}
	lines := execute(t, ts.URL, map[string]any{"code": "kept + 1"})
	if res := ofType(lines, "result"); len(res) != 1 || res[0].str("text") != "2" || len(ofType(lines, "error")) > 0 {
		t.Fatalf("after idle SIGINTs: %v", lines)
	}
	if r.proc.cmd.Process.Pid != pid {
		t.Fatalf("runner was restarted")
	}
	gate := filepath.Join(t.TempDir(), "started")
	go func() {
		for {
			if _, err := os.Stat(gate); err == nil {
				_ = syscall.Kill(-pid, syscall.SIGINT)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	lines = execute(t, ts.URL, map[string]any{"code": fmt.Sprintf("import time\nopen(%q, 'w').close()\nwhile True: time.sleep(0.01)", gate)})
	if e := ofType(lines, "error"); len(e) != 1 || e[0].str("name") != "KeyboardInterrupt" {
		t.Fatalf("interrupted cell: %v", lines)
	}
	if res := ofType(execute(t, ts.URL, map[string]any{"code": "kept"}), "result"); len(res) != 1 || res[0].str("text") != "1" {
		t.Fatalf("state lost after the interrupt: %v", res)
	}
}

// The formatter speed-ups of driver/ipython_fast.py serve both drivers;
// each leaves itself out on an IPython of another shape, so this test is
// what says they went with it.
func TestFormatterSpeedupsApplied(t *testing.T) {
	for _, driver := range []string{PythonRunner, PythonKernel} {
		t.Run(driver, func(t *testing.T) {
			_, ts := newTestServer(t, Config{PythonDriver: driver, DefaultLanguages: []string{"python"}})
			code := "import IPython.core.formatters as f\n" +
				"print(type(get_ipython().display_formatter).format.__name__, f.BaseFormatter.__call__.__name__)\ndel f"
			if got, want := strings.TrimSpace(stdout(execute(t, ts.URL, map[string]any{"code": code}))), "format_number_plainly call_no_printer_for_numbers"; got != want {
				t.Fatalf("got %q, want %q (has IPython changed? see driver/ipython_fast.py)", got, want)
			}
		})
	}
}

// A process forked while another thread held the runner's frame lock
// (multiprocessing forks on Linux) inherits it held by a thread it does
// not have: its first print would hang. The child must get a lock of its
// own, and its output still reaches the client.
func TestPythonRunnerForkWhileFrameLockHeld(t *testing.T) {
	_, ts := newTestServer(t, Config{DefaultLanguages: []string{"python"}})
	code := strings.Join([]string{
		"import os, sys, threading, time",
		"held, done = threading.Event(), threading.Event()",
		"def hold():",
		"    with sys.stdout.wire.lock:",
		"        held.set(); done.wait(5)",
		"threading.Thread(target=hold).start(); held.wait(5)",
		"pid = os.fork()",
		"if pid == 0:",
		"    print('child', end=''); sys.stdout.flush(); os._exit(0)",
		"done.set()",
		"for _ in range(200):",
		"    if os.waitpid(pid, os.WNOHANG)[0]: break  # a hung child waits 20 s",
		"    time.sleep(0.1)",
		"else:",
		"    os.kill(pid, 9); os.waitpid(pid, 0); print('child hung')",
		"print('')",
	}, "\n")
	lines := execute(t, ts.URL, map[string]any{"code": code})
	out := stdout(lines)
	if strings.Contains(out, "child hung") || !strings.Contains(out, "child") {
		t.Fatalf("forked child: stdout %q", out)
	}
	if e := ofType(lines, "error"); len(e) > 0 {
		t.Fatalf("error: %v", e)
	}
}

// Large outputs go through whole: a pipe holds 64 KiB, a frame can be
// megabytes.
func TestPythonRunnerLargeOutput(t *testing.T) {
	_, ts := newTestServer(t, Config{DefaultLanguages: []string{"python"}})
	lines := execute(t, ts.URL, map[string]any{"code": "print('y' * 3_000_000)\nimport sys; sys.stdout.write('z' * 100_000)\n'x' * 2_000_000"})
	if got := len(stdout(lines)); got != 3_100_001 {
		t.Errorf("stdout of %d bytes, want 3100001", got)
	}
	if r := ofType(lines, "result"); len(r) != 1 || len(r[0].str("text")) != 2_000_000 {
		t.Errorf("result lines %d", len(r))
	}
}

// What a subprocess writes to fd 1 and 2 belongs to the cell that ran it:
// it comes before the cell's end, every time.
func TestPythonRunnerSubprocessOutput(t *testing.T) {
	_, ts := newTestServer(t, Config{DefaultLanguages: []string{"python"}})
	for i := range 20 {
		lines := execute(t, ts.URL, map[string]any{"code": fmt.Sprintf("import subprocess\nsubprocess.run(['sh', '-c', 'echo out-%d; echo err-%d >&2'])\nNone", i, i)})
		var errText strings.Builder
		for _, l := range ofType(lines, "stderr") {
			errText.WriteString(l.str("text"))
		}
		if got, want := stdout(lines), fmt.Sprintf("out-%d\n", i); got != want {
			t.Fatalf("run %d: stdout %q, want %q", i, got, want)
		}
		if got, want := errText.String(), fmt.Sprintf("err-%d\n", i); got != want {
			t.Fatalf("run %d: stderr %q, want %q", i, got, want)
		}
	}
}

// A cell may point the runner's own fd 1 or 2 elsewhere (silencing a C
// library's output with dup2, or closing it) and never restore it. The
// run must still end, and the next one too: the runner wrote each run's
// end marker to fds 1 and 2, so the marker went to /dev/null (or nowhere)
// and the server waited for it for good, holding the context.
func TestPythonRunnerEndsAfterACellMovedItsStdout(t *testing.T) {
	for _, tc := range []struct{ name, code string }{
		{"dup2 devnull over 1", "import os\nos.dup2(os.open(os.devnull, os.O_WRONLY), 1)\n'moved'"},
		{"close 2", "import os\nos.close(2)\n'moved'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ts := newTestServer(t, Config{DefaultLanguages: []string{"python"}})
			for i, code := range []string{tc.code, "1 + 1"} {
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				b, _ := json.Marshal(map[string]any{"code": code})
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/execute", bytes.NewReader(b))
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					cancel()
					t.Fatal(err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				cancel()
				if err != nil { // a hang, not a slow run
					t.Fatalf("run %d (%q) never ended: %v; got %s", i, code, err, body)
				}
				if !bytes.Contains(body, []byte(`"is_main_result":true`)) {
					t.Fatalf("run %d (%q): no result in %s", i, code, body)
				}
			}
		})
	}
}

// defaultPyRunner starts a test server and returns it with the runner of
// its default Python context.
func defaultPyRunner(t *testing.T) (*httptest.Server, *pyRunner) {
	t.Helper()
	s, ts := newTestServer(t, Config{DefaultLanguages: []string{"python"}})
	c, err := s.defaultContext(t.Context(), "python")
	if err != nil {
		t.Fatal(err)
	}
	r, ok := c.run.(*pyRunner)
	if !ok {
		t.Fatalf("default python runner is %T", c.run)
	}
	return ts, r
}

// A cell may close the runner's own descriptors (its frames to the server,
// its requests, its end markers) and open files that get their numbers:
// daemon code closes every descriptor above 2, and a cell may close fd 3,
// where the frames arrive. The runner's protocol must never go into the
// cell's file: then the run never ended and the server waited for good.
// Either the runner's descriptors are out of the way (the run goes on), or
// the runner sees they are gone and the run ends with an error, the
// context restarting as after any death.
func TestPythonRunnerSurvivesACellClosingItsDescriptors(t *testing.T) {
	for _, tc := range []struct {
		name, code string
		restarts   bool   // the runner lost its descriptors and restarted
		stdout     string // what the cell printed that reaches the client
	}{
		{name: "close 3, open a file", code: "import os\ntry:\n    os.close(3)\nexcept OSError:\n    pass\nf = open(P, 'w')\nprint('after')",
			stdout: "after\n"},
		{name: "a file over every descriptor above 2", restarts: true,
			code: "import os\nfd = os.open(P, os.O_WRONLY)\nfor n in os.listdir('/proc/self/fd'):\n" +
				"    if int(n) > 2 and int(n) != fd:\n        try:\n            os.dup2(fd, int(n))\n        except OSError:\n            pass\nprint('after')"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ts := newTestServer(t, Config{DefaultLanguages: []string{"python"}})
			file := filepath.Join(t.TempDir(), "cell-file")
			if err := os.WriteFile(file, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			execute(t, ts.URL, map[string]any{"code": fmt.Sprintf("state = 1\nP = %q", file)})
			lines, err := executeWithin(t, ts.URL, map[string]any{"code": tc.code}, 20*time.Second)
			if err != nil {
				t.Fatalf("the run never ended: %v; got %v", err, lines)
			}
			if b, _ := os.ReadFile(file); len(b) > 0 {
				t.Errorf("the runner wrote into the cell's file: %q", b)
			}
			errs := ofType(lines, "error")
			if got := stdout(lines); got != tc.stdout {
				t.Errorf("stdout %q, want %q (errors %v)", got, tc.stdout, errs)
			}
			if !tc.restarts {
				if len(errs) > 0 {
					t.Fatalf("errors: %v", errs)
				}
				if r := ofType(execute(t, ts.URL, map[string]any{"code": "state"}), "result"); len(r) != 1 || r[0].str("text") != "1" {
					t.Fatalf("state lost: %v", r)
				}
				return
			}
			checkEndedSaying(t, lines, "closed or replaced")
			next := execute(t, ts.URL, map[string]any{"code": "'state' in dir()"})
			if r := ofType(next, "result"); len(r) != 1 || r[0].str("text") != "False" {
				t.Fatalf("run after the restart: %v", next)
			}
		})
	}
}

// checkEndedSaying checks a run that ended its interpreter: one
// UnexpectedEndOfExecution error, and a reason on stderr containing why.
func checkEndedSaying(t *testing.T, lines []line, why string) {
	t.Helper()
	if errs := ofType(lines, "error"); len(errs) != 1 || errs[0].str("name") != "UnexpectedEndOfExecution" {
		t.Fatalf("errors %v, want UnexpectedEndOfExecution", errs)
	}
	var said strings.Builder
	for _, l := range ofType(lines, "stderr") {
		said.WriteString(l.str("text"))
	}
	if !strings.Contains(said.String(), why) {
		t.Errorf("stderr %q does not say why the interpreter ended (%q)", said.String(), why)
	}
}

// executeWithin runs an /execute request and returns its lines, or an
// error when the run has not ended within d (a hang, not a slow run).
func executeWithin(t *testing.T, base string, body any, d time.Duration) ([]line, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/execute", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return readLines(resp.Body)
}
