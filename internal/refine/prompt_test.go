package refine

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

func TestExtractCode(t *testing.T) {
	t.Parallel()
	py, _ := LookupLanguage("python")
	bash, _ := LookupLanguage("bash")
	tests := []struct {
		name   string
		reply  string
		lang   Language
		want   string
		wantOK bool
	}{
		{"tagged", "Sure:\n```python\nprint(1)\n```\nDone.", py, "print(1)\n", true},
		{"alias tag", "```py\nx = 1\nprint(x)\n```", py, "x = 1\nprint(x)\n", true},
		{"untagged", "```\nprint(2)\n```", py, "print(2)\n", true},
		{"prefers the language's block", "```text\npip install x\n```\n```python\nprint(3)\n```", py, "print(3)\n", true},
		{"first block when no tag matches", "```text\nhello\n```\n```js\nx\n```", py, "hello\n", true},
		{"bash", "```sh\necho hi\n```", bash, "echo hi\n", true},
		{"tag with attributes", "```python title=main.py\nprint(4)\n```", py, "print(4)\n", true},
		{"no fence", "print(5)", py, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := ExtractCode(tt.reply, tt.lang)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("ExtractCode = %q, %v; want %q, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestTrimTraceback(t *testing.T) {
	t.Parallel()
	var frames []string
	for i := range 100 {
		frames = append(frames, fmt.Sprintf("\x1b[0;32mFile \"<cell>\", line %d\x1b[0m in f%d", i, i))
	}
	long := strings.Join(frames, "\n") + "\nRecursionError: maximum recursion depth exceeded"
	tests := []struct {
		name    string
		err     *ExecError
		has     []string
		hasNot  []string
		maxSize int
	}{
		{"colours stripped, tail kept", &ExecError{Name: "RecursionError", Value: "maximum recursion depth exceeded", Traceback: long},
			[]string{"RecursionError: maximum recursion depth exceeded", "in f99", "earlier lines omitted"}, []string{"\x1b[", "in f0\n"}, maxTracebackChars + 100},
		{"no traceback", &ExecError{Name: "NameError", Value: "name 'x' is not defined"}, []string{"NameError: name 'x' is not defined"}, nil, 200},
		{"value appended when missing", &ExecError{Name: "E", Value: "boom", Traceback: "line 1"}, []string{"line 1", "E: boom"}, nil, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := TrimTraceback(tt.err)
			for _, h := range tt.has {
				if !strings.Contains(got, h) {
					t.Errorf("missing %q in:\n%s", h, got)
				}
			}
			for _, h := range tt.hasNot {
				if strings.Contains(got, h) {
					t.Errorf("unexpected %q in:\n%s", h, got)
				}
			}
			if len(got) > tt.maxSize {
				t.Errorf("%d chars, want at most %d", len(got), tt.maxSize)
			}
		})
	}
}

func TestPromptCarriesFeedback(t *testing.T) {
	t.Parallel()
	py, _ := LookupLanguage("")
	env := &Environment{Template: "code-interpreter", Description: describeTemplate("code-interpreter"),
		System: "OS: Debian GNU/Linux 12", Packages: []string{"numpy==1.24.2", "pandas==1.5.3"}}
	prev := &Attempt{Number: 2, Code: "print(totl)\n", Stdout: "partial\n",
		Error: &ExecError{Name: "NameError", Value: "name 'totl' is not defined", Traceback: "\x1b[31mNameError\x1b[0m: name 'totl' is not defined"}}
	older := &Attempt{Number: 1, Validation: "standard output does not match"}
	p := prompt{Requirement: "Sum numbers", Lang: py, Env: env, TestCode: "assert f() == 3", Expect: `^3$`, Previous: prev, Earlier: []*Attempt{older}}
	req := p.request()
	user := req.Messages[0].Content
	for _, want := range []string{"Sum numbers", "code-interpreter", "numpy==1.24.2", "Debian", "assert f() == 3", "^3$",
		"attempt (#2) failed", "print(totl)", "partial", "NameError: name 'totl' is not defined", "#1: standard output does not match", "corrected program"} {
		if !strings.Contains(user, want) {
			t.Errorf("prompt lacks %q:\n%s", want, user)
		}
	}
	if strings.Contains(user, "\x1b") {
		t.Error("prompt contains terminal escape codes")
	}
	if !strings.Contains(req.System, "```python") || !strings.Contains(req.System, "notebook") {
		t.Errorf("system prompt = %q", req.System)
	}
	first := prompt{Requirement: "Sum numbers", Lang: py}.request().Messages[0].Content
	if strings.Contains(first, "failed") {
		t.Errorf("first prompt mentions a failure:\n%s", first)
	}
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		opts   Options
		errHas string
	}{
		{"defaults", Options{Requirement: "x"}, ""},
		{"empty requirement", Options{Requirement: " "}, "empty requirement"},
		{"bad language", Options{Requirement: "x", Language: "cobol"}, "unknown language \"cobol\""},
		{"too many attempts", Options{Requirement: "x", MaxAttempts: 99}, "max attempts 99 out of range"},
		{"bad regex", Options{Requirement: "x", Expect: "("}, "invalid expected-output pattern"},
		{"bad id", Options{Requirement: "x", ID: "a/b"}, "invalid refinement id"},
		{"best of", Options{Requirement: "x", BestOf: 100}, "best-of 100 out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := tt.opts
			err := o.Validate()
			if tt.errHas == "" {
				if err != nil {
					t.Fatal(err)
				}
				if o.Template != DefaultTemplate || o.MaxAttempts != DefaultMaxAttempts || o.RunTimeout != DefaultRunTimeout || !strings.HasPrefix(o.ID, "ref_") {
					t.Errorf("defaults not filled: %+v", o)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("err = %v, want %q", err, tt.errHas)
			}
		})
	}
}

func TestCost(t *testing.T) {
	t.Parallel()
	// 10 s of 2 vCPUs and 1 GiB: 20 vCPU-s and 10 GiB-s.
	want := 20*USDPerVCPUSecond + 10*USDPerGiBSecond
	if got := Cost(10*time.Second, 2, 1024); math.Abs(got-want) > 1e-12 {
		t.Errorf("Cost = %g, want %g", got, want)
	}
}

func TestCapOutput(t *testing.T) {
	t.Parallel()
	if got := capOutput("short"); got != "short" {
		t.Errorf("short output changed: %q", got)
	}
	long := strings.Repeat("x", MaxOutputBytes) + "THE END"
	got := capOutput(long)
	if !strings.HasSuffix(got, "THE END") || !strings.HasPrefix(got, "[... first 7 bytes omitted ...]") || len(got) > MaxOutputBytes+64 {
		t.Errorf("capped output: prefix %q suffix %q len %d", got[:40], got[len(got)-10:], len(got))
	}
}
