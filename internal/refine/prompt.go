package refine

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/sbxdev/sbx/internal/llm"
)

// Limits on what goes back into the prompt: enough for a model to find the
// bug, not so much that a runaway print loop floods the context window.
const (
	maxTracebackLines = 30
	maxTracebackChars = 3000
	maxOutputLines    = 40
	maxOutputChars    = 3000
	maxPackagesListed = 200
)

var ansiRE = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

// stripANSI removes terminal colour codes (IPython colours its tracebacks).
func stripANSI(s string) string { return ansiRE.ReplaceAllString(s, "") }

// tail keeps the last maxLines lines and maxChars characters of s, saying
// how much it dropped: the end of a traceback is where the error is.
func tail(s string, maxLines, maxChars int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	dropped := 0
	if len(lines) > maxLines {
		dropped = len(lines) - maxLines
		lines = lines[dropped:]
	}
	out := strings.Join(lines, "\n")
	if len(out) > maxChars {
		cut := len(out) - maxChars
		dropped += strings.Count(out[:cut], "\n")
		out = out[cut:]
		if i := strings.IndexByte(out, '\n'); i >= 0 && i < 200 {
			out = out[i+1:]
			dropped++
		}
	}
	if dropped > 0 {
		out = fmt.Sprintf("[... %d earlier lines omitted ...]\n", dropped) + out
	}
	return out
}

// TrimTraceback makes an execution error fit for a prompt: colour codes
// removed, only the innermost frames kept, and the "Name: value" line
// guaranteed to be present.
func TrimTraceback(e *ExecError) string {
	if e == nil {
		return ""
	}
	head := e.Name + ": " + e.Value
	tb := strings.TrimSpace(stripANSI(e.Traceback))
	if tb == "" {
		return head
	}
	tb = tail(tb, maxTracebackLines, maxTracebackChars)
	if !strings.Contains(tb, e.Value) {
		tb += "\n" + head
	}
	return tb
}

var fenceRE = regexp.MustCompile("(?s)```[ \\t]*([A-Za-z0-9_+#.-]*)[^\\n]*\\n(.*?)\\n?[ \\t]*```")

// ExtractCode returns the program in an LLM reply: the first fenced block
// tagged with the language (or one of its aliases), else the first fenced
// block. ok is false when the reply has no fenced block at all.
func ExtractCode(reply string, lang Language) (code string, ok bool) {
	blocks := fenceRE.FindAllStringSubmatch(reply, -1)
	if len(blocks) == 0 {
		return "", false
	}
	for _, b := range blocks {
		tag := strings.ToLower(b[1])
		for _, a := range lang.Aliases {
			if tag == a {
				return strings.TrimSpace(b[2]) + "\n", true
			}
		}
	}
	return strings.TrimSpace(blocks[0][2]) + "\n", true
}

// Environment describes where the code runs, for the prompt.
type Environment struct {
	Template    string   `json:"template"`
	Description string   `json:"description"`
	System      string   `json:"system,omitempty"`   // OS, interpreter versions, tools found
	Packages    []string `json:"packages,omitempty"` // installed Python distributions, name==version
	// ProbeSandboxID is the sandbox the environment was read from.
	ProbeSandboxID string `json:"probe_sandbox_id,omitempty"`
	// CPUs and MemoryMB are the template's allocation, which prices its sandboxes.
	CPUs     int `json:"cpus"`
	MemoryMB int `json:"memory_mb"`
}

// builtinDescriptions say what sbx's built-in templates are for.
var builtinDescriptions = map[string]string{
	"code-interpreter": "Debian 12 with Python 3 and a Jupyter (IPython) kernel; Python code runs as a notebook cell: " +
		"the value of the last expression is shown, and matplotlib figures shown with plt.show() are captured as PNG images. " +
		"Data-science stack (numpy, pandas, matplotlib, scipy, seaborn) is preinstalled.",
	"base": "Debian 12 with bash, coreutils, Python 3 and pip.",
}

func describeTemplate(name string) string {
	if d, ok := builtinDescriptions[name]; ok {
		return d
	}
	return fmt.Sprintf("custom template %q (Linux); rely only on what the environment below lists", name)
}

// prompt is what one generation sends.
type prompt struct {
	Requirement string
	Lang        Language
	Env         *Environment
	TestCode    string
	Expect      string
	Previous    *Attempt   // the last failed attempt, shown in full
	Earlier     []*Attempt // older failures, one line each
}

func (p prompt) request() llm.Request {
	tag := p.Lang.Aliases[0]
	sys := fmt.Sprintf("You are an expert %s programmer. Write one complete program that satisfies the requirement "+
		"and runs unattended (no input, no network servers) in a Linux sandbox. Print the results to standard output. "+
		"Reply with exactly one fenced code block (```%s ... ```) containing the whole program and nothing else.",
		p.Lang.Display, tag)
	if p.Lang.Interpreter {
		sys += " The code runs as a Jupyter notebook cell; use plt.show() to display figures."
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Requirement:\n%s\n\n", strings.TrimSpace(p.Requirement))
	if p.Env != nil {
		fmt.Fprintf(&b, "Environment: template %q: %s\n", p.Env.Template, p.Env.Description)
		if p.Env.System != "" {
			fmt.Fprintf(&b, "%s\n", p.Env.System)
		}
		if len(p.Env.Packages) > 0 {
			pk := p.Env.Packages
			more := ""
			if len(pk) > maxPackagesListed {
				more = fmt.Sprintf(" (and %d more)", len(pk)-maxPackagesListed)
				pk = pk[:maxPackagesListed]
			}
			fmt.Fprintf(&b, "Installed Python packages: %s%s\n", strings.Join(pk, ", "), more)
		}
		b.WriteString("\n")
	}
	if p.TestCode != "" {
		fmt.Fprintf(&b, "After your program, this test code runs in the same session and must not fail:\n```%s\n%s\n```\n\n",
			tag, strings.TrimSpace(p.TestCode))
	}
	if p.Expect != "" {
		fmt.Fprintf(&b, "The program's standard output must match this regular expression: %s\n\n", p.Expect)
	}
	if a := p.Previous; a != nil {
		fmt.Fprintf(&b, "Your previous attempt (#%d) failed.\nIts code:\n```%s\n%s\n```\n", a.Number, tag, strings.TrimRight(a.Code, "\n"))
		if out := strings.TrimSpace(a.Stdout); out != "" {
			fmt.Fprintf(&b, "Its standard output:\n%s\n", tail(out, maxOutputLines, maxOutputChars))
		}
		if a.Error != nil {
			fmt.Fprintf(&b, "Its error:\n%s\n", TrimTraceback(a.Error))
		} else if errOut := strings.TrimSpace(a.Stderr); errOut != "" {
			fmt.Fprintf(&b, "Its standard error:\n%s\n", tail(errOut, maxOutputLines, maxOutputChars))
		}
		if a.Validation != "" {
			fmt.Fprintf(&b, "Why it was rejected: %s\n", a.Validation)
		}
		b.WriteString("\n")
	}
	if len(p.Earlier) > 0 {
		b.WriteString("Earlier attempts failed with:\n")
		for _, a := range p.Earlier {
			fmt.Fprintf(&b, "- #%d: %s\n", a.Number, a.summary())
		}
		b.WriteString("\n")
	}
	if p.Previous != nil {
		b.WriteString("Fix the problem and reply with the complete corrected program.")
	} else {
		b.WriteString("Reply with the program.")
	}
	return llm.Request{System: sys, Messages: []llm.Message{{Role: "user", Content: b.String()}}}
}
