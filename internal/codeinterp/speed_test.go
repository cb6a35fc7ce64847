package codeinterp

import (
	"reflect"
	"strings"
	"testing"
)

// The start-up file takes ipykernel's per-run overhead out
// (driver/ipython_fast.py). Each patch leaves itself out
// quietly on an ipykernel of another shape, so that a kernel upgrade can
// never break runs; this test is what says the speed-up went with it.
func TestKernelSpeedupsApplied(t *testing.T) {
	_, ts := newTestServer(t, Config{PythonDriver: PythonKernel})
	lines := execute(t, ts.URL, map[string]any{"code": "import sys\n" +
		"k = get_ipython().kernel\n" +
		"import IPython.core.formatters as f\n" +
		"print(type(k.iopub_thread).send_multipart.__name__, type(sys.stdout).flush.__name__, k._execute_sleep, k.log.level > 10, hasattr(f.BaseFormatter.__call__, '__signature__'))\n" +
		"print(k._flush_control_queue.__name__, k._publish_status.__name__, k.shell_stream.send_multipart.__name__, k.iopub_thread.socket.send_multipart.__name__, get_ipython().transform_cell.__name__, k.session.pack.__name__, k.session.send.__name__, f.BaseFormatter.__call__.__name__)\n" +
		"del k, f"})
	if got, want := strings.TrimSpace(stdout(lines)), "direct_send_multipart flush_if_written 0.0 True False\n"+
		"skip_flush_control_queue publish_status_but_busy direct_stream_send bytes_send_multipart transform_cell_once json_packer_one_encoder send_execute_reply_last call_no_printer_for_numbers"; got != want {
		t.Fatalf("speed-ups in the kernel: got %q, want %q (has ipykernel changed? see driver/ipython_fast.py)", got, want)
	}
}

// Status, results and display data now leave the cell's thread at once,
// and empty flushes are skipped: prints, displays, a background thread's
// print and the result must still come in the order they were made.
func TestOutputOrder(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	code := strings.Join([]string{
		"import threading",
		"from IPython.display import display",
		"print('a')",
		"display('b')",
		"print('c')",
		"t = threading.Thread(target=lambda: print('t')); t.start(); t.join()",
		"display('d')",
		"'e'",
	}, "\n")
	want := []string{"stdout a\n", "result b", "stdout c\nt\n", "result d", "result e"}
	for range 20 {
		var got []string
		for _, l := range execute(t, ts.URL, map[string]any{"code": code}) {
			switch typ := l.str("type"); typ {
			case "stdout":
				// How text is cut into messages is the kernel's choice.
				if n := len(got); n > 0 && strings.HasPrefix(got[n-1], "stdout ") {
					got[n-1] += l.str("text")
					continue
				}
				got = append(got, "stdout "+l.str("text"))
			case "result", "stderr", "error":
				got = append(got, typ+" "+l.str("text")+l.str("name"))
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("lines %q, want %q", got, want)
		}
	}
}

// A process forked while the IOPub thread held the start-up file's send
// lock inherits it locked, with no thread left to release it: its first
// flush would hang forever (multiprocessing forks by default on Linux).
// The child must get a lock of its own.
func TestForkWhileSendLockHeld(t *testing.T) {
	_, ts := newTestServer(t, Config{PythonDriver: PythonKernel})
	code := strings.Join([]string{
		"import os, sys, threading, time",
		"guard = next(c.cell_contents for c in type(sys.stdout)._flush.__closure__ if c.cell_contents.__name__ == 'Guard')",
		"held, done = threading.Event(), threading.Event()",
		"def hold():",
		"    with guard.lock:",
		"        held.set(); done.wait(5)",
		"threading.Thread(target=hold).start(); held.wait(5)",
		"pid = os.fork()",
		"if pid == 0:",
		"    print('child'); sys.stdout.flush(); os._exit(0)",
		"done.set()",
		"for _ in range(200):",
		"    if os.waitpid(pid, os.WNOHANG)[0]: break  # a hung child waits 20 s",
		"    time.sleep(0.1)",
		"else:",
		"    os.kill(pid, 9); os.waitpid(pid, 0); print('child hung')",
	}, "\n")
	lines := execute(t, ts.URL, map[string]any{"code": code})
	if out := stdout(lines); strings.Contains(out, "child hung") {
		t.Fatalf("a forked child hung on the send lock: %q", out)
	}
	if e := ofType(lines, "error"); len(e) > 0 {
		t.Fatalf("error: %v", e)
	}
}

// The start-up file hands ipykernel's second transform of a cell the
// first one's result. Transforms depend on state earlier runs change
// (magics, a failed transform): each run must still see its own.
func TestTransformOncePerRun(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	steps := []struct {
		code, text, stdout, errName string
	}{
		{code: "sbx_say hi", errName: "SyntaxError"},
		{code: "%alias sbx_say echo"},
		{code: "sbx_say hi", stdout: "hi"},
		{code: "%sbx_shout hi", errName: "UsageError"},
		{code: "from IPython.core.magic import register_line_magic\n@register_line_magic\ndef sbx_shout(line):\n    return line.upper()\ndel sbx_shout"},
		{code: "%sbx_shout hi", text: "HI"},
		{code: "%sbx_shout hi", text: "HI"},
		{code: "import asyncio\nawait asyncio.sleep(0)\n%sbx_shout async", text: "ASYNC"},
		{code: "s = 'sbx_say again'\nget_ipython().run_cell(s); get_ipython().run_cell(s);", stdout: "again\nagain"},
		{code: "1 +", errName: "SyntaxError"},
		{code: "1 + 1", text: "2"},
	}
	for i, st := range steps {
		lines := execute(t, ts.URL, map[string]any{"code": st.code})
		var text, errName string
		for _, l := range lines {
			switch l.str("type") {
			case "result":
				text += l.str("text")
			case "error":
				errName = l.str("name")
			}
		}
		out := strings.TrimSpace(strings.ReplaceAll(stdout(lines), "\r\n", "\n")) // shell commands run on a terminal
		if st.text != "" && text != st.text || errName != st.errName || st.stdout != "" && out != st.stdout {
			t.Fatalf("step %d (%q): result %q, error %q, stdout %q; want %q, %q", i, st.code, text, errName, stdout(lines), st.text, st.errName)
		}
	}
}

// Numbers skip the MIME formatters' printer search unless a printer was
// registered for their type (directly, deferred by name, or for object):
// such printers must still be found, and forgotten when removed.
func TestNumberPrinters(t *testing.T) {
	for _, driver := range []string{PythonRunner, PythonKernel} {
		t.Run(driver, func(t *testing.T) { testNumberPrinters(t, driver) })
	}
}

func testNumberPrinters(t *testing.T, driver string) {
	_, ts := newTestServer(t, Config{PythonDriver: driver, DefaultLanguages: []string{"python"}})
	steps := []struct{ code, field, want string }{
		{"7", "html", ""},
		{"html = get_ipython().display_formatter.formatters['text/html']\nhtml.for_type(int, lambda x: '<b>%d</b>' % x)\n7", "html", "<b>7</b>"},
		{"True", "html", "<b>1</b>"}, // bool is an int
		{"html.for_type_by_name('builtins', 'float', lambda x: '<i>%s</i>' % x)\n2.5", "html", "<i>2.5</i>"},
		{"html.pop(int); html.pop(float)\n7", "html", ""},
		{"md = get_ipython().display_formatter.formatters['text/markdown']\nmd.for_type(object, lambda x: '**x**')\n3j", "markdown", "**x**"},
		{"md.pop(object)\n3j", "markdown", ""},
		// A printer on a formatter only the full path asks: the mimebundle.
		{"mb = get_ipython().display_formatter.mimebundle_formatter\nmb.for_type(int, lambda x: {'text/html': '<u>%d</u>' % x})\n7", "html", "<u>7</u>"},
		{"mb.pop(int)\n7", "html", ""},
		// A number held by a singleton printer, and a formatter of the user's.
		{"from IPython.core.formatters import BaseFormatter\nclass F(BaseFormatter):\n    format_type = 'text/html'\n    def __call__(self, obj): return '<s>%r</s>' % (obj,)\nfmt = get_ipython().display_formatter.formatters\nold = fmt['text/html']\nfmt['text/html'] = F()\n7", "html", "<s>7</s>"},
		{"fmt['text/html'] = old\n7", "html", ""},
		{"8", "text", "8"},
	}
	for i, st := range steps {
		var got string
		for _, l := range execute(t, ts.URL, map[string]any{"code": st.code}) {
			if l.str("type") == "error" {
				t.Fatalf("step %d: error %v", i, l)
			}
			if l.str("type") == "result" {
				got = l.str(st.field)
			}
		}
		if got != st.want {
			t.Fatalf("step %d (%q): %s %q, want %q", i, st.code, st.field, got, st.want)
		}
	}
}
