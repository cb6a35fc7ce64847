// Package builder turns a Dockerfile into a build plan and executes plans
// without a Docker daemon: every RUN and COPY step runs in a short-lived
// build sandbox (crun, overlay of the layers built so far) and the
// sandbox's writable layer becomes a cached, content-addressed layer
// directory that later sandboxes stack as read-only lower layers.
package builder

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"

	"github.com/sbxdev/sbx/internal/errdefs"
)

// Step types, as the E2B SDK sends them (protocol doc §1.6.1).
const (
	StepRun  = "RUN"
	StepCopy = "COPY"
	// StepAdd is COPY that also unpacks local tar archives (Dockerfile ADD,
	// as sbx's own Dockerfile parser emits it; the E2B SDK sends COPY).
	StepAdd     = "ADD"
	StepEnv     = "ENV"
	StepWorkdir = "WORKDIR"
	StepUser    = "USER"
)

// Step is one build instruction in the E2B SDK's layout:
//
//	RUN     [command, user?]
//	COPY    [src, dest, user or "", mode as octal or ""] + FilesHash
//	ADD     as COPY; a source that is a tar archive is unpacked into dest
//	ENV     [k1, v1, k2, v2, ...]
//	WORKDIR [path]
//	USER    [name]
type Step struct {
	Type      string   `json:"type"`
	Args      []string `json:"args"`
	FilesHash string   `json:"filesHash,omitempty"`
	Force     bool     `json:"force,omitempty"`
	// Line is the Dockerfile line the step came from (the leading USER root
	// and WORKDIR / have FROM's). Builds whose steps all have one (sbx's own
	// Dockerfile import) name steps by line, as the user sees the file;
	// others (the E2B SDKs') by their index in the request.
	Line int `json:"line,omitempty"`
}

// HasFiles reports whether the step needs uploaded files (COPY and ADD).
func (s Step) HasFiles() bool { return s.Type == StepCopy || s.Type == StepAdd }

// String renders the step for logs and cache keys.
func (s Step) String() string {
	return s.Type + " " + strings.Join(s.Args, " ")
}

// Plan is a parsed Dockerfile: the base to start from, the steps, and the
// command the template starts with.
type Plan struct {
	// From is an sbx template name ("base", "code-interpreter", aliases
	// such as e2bdev/base) or, when FromImage is set, an OCI image reference.
	From      string `json:"from"`
	FromImage bool   `json:"fromImage,omitempty"`
	Steps     []Step `json:"steps"`
	StartCmd  string `json:"startCmd,omitempty"`
	ReadyCmd  string `json:"readyCmd,omitempty"`
	// Notes lists instructions that were accepted but have no effect in a
	// sandbox (EXPOSE, LABEL, ...), so nothing is ignored silently.
	Notes []string `json:"notes,omitempty"`
	// Warnings lists instructions that were accepted but behave otherwise
	// than under Docker (VOLUME), which a user should read.
	Warnings []string `json:"warnings,omitempty"`
}

// ParseOptions tune Parse.
type ParseOptions struct {
	BuildArgs map[string]string // override ARG defaults (docker build --build-arg)
}

// templateBases are the names FROM treats as sbx templates rather than images.
var templateBases = map[string]string{
	"base": "base", "e2bdev/base": "base",
	"code-interpreter": "code-interpreter", "e2bdev/code-interpreter": "code-interpreter",
	"code-interpreter-v1": "code-interpreter", "e2bdev/code-interpreter-v1": "code-interpreter",
}

// TemplateBase maps a FROM reference to a built-in sbx template name, or ""
// when the reference is not one (then it is an image or a user template).
func TemplateBase(ref string) string {
	r := strings.TrimSuffix(ref, ":latest")
	r = strings.TrimPrefix(r, "docker.io/")
	return templateBases[r]
}

// Parse reads a Dockerfile into a plan. Errors name the line and say what to
// do instead; they are errdefs.Invalid.
func Parse(r io.Reader, opts ParseOptions) (*Plan, error) {
	src, err := io.ReadAll(io.LimitReader(r, 1<<20+1))
	if err != nil {
		return nil, fmt.Errorf("read Dockerfile: %w", err)
	}
	if len(src) > 1<<20 {
		return nil, errdefs.Invalid("Dockerfile is larger than 1 MiB; move data into files and COPY them")
	}
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil && strings.Contains(err.Error(), "no instructions") {
		return nil, errdefs.Invalid("Dockerfile has no instructions; start it with `FROM base`")
	}
	if err != nil {
		return nil, errdefs.Invalid("Dockerfile syntax error: %v", err)
	}
	p := &planner{plan: &Plan{}, args: map[string]string{}, env: map[string]string{},
		buildArgs: opts.BuildArgs, lex: shell.NewLex(res.EscapeToken)}
	for _, n := range res.AST.Children {
		if err := p.instruction(n); err != nil {
			return nil, err
		}
	}
	if p.plan.From == "" {
		return nil, errdefs.Invalid("Dockerfile has no FROM instruction; start it with `FROM base` (or e2bdev/code-interpreter, or an image such as python:3.12)")
	}
	return p.plan, nil
}

type planner struct {
	plan      *Plan
	lex       *shell.Lex
	args      map[string]string // ARG values in scope
	env       map[string]string // ENV values in scope (for expansion)
	buildArgs map[string]string
	entry     string // ENTRYPOINT as a shell command
	cmd       string // CMD as a shell command
}

func lineErr(n *parser.Node, format string, a ...any) error {
	return errdefs.Invalid("Dockerfile line %d: %s: %s", n.StartLine, strings.ToUpper(n.Value), fmt.Sprintf(format, a...))
}

// vars merges ARG and ENV for ${} expansion, ENV winning as in Docker.
type vars map[string]string

func (v vars) Get(k string) (string, bool) { s, ok := v[k]; return s, ok }
func (v vars) Keys() []string {
	out := make([]string, 0, len(v))
	for k := range v {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (p *planner) scope() vars {
	v := vars{}
	for k, s := range p.args {
		v[k] = s
	}
	for k, s := range p.env {
		v[k] = s
	}
	return v
}

func (p *planner) expand(n *parser.Node, word string) (string, error) {
	out, _, err := p.lex.ProcessWord(word, p.scope())
	if err != nil {
		return "", lineErr(n, "cannot expand %q: %v", word, err)
	}
	return out, nil
}

func nodeArgs(n *parser.Node) []string {
	var out []string
	for a := n.Next; a != nil; a = a.Next {
		out = append(out, a.Value)
	}
	return out
}

// unsupported maps instructions sbx rejects to a hint on what to do instead.
var unsupported = map[string]string{
	"shell":       "RUN uses /bin/sh -c; call another shell explicitly, e.g. RUN bash -c '...'",
	"onbuild":     "triggers are not supported; put the instructions in the Dockerfile that needs them",
	"healthcheck": "use a ready command instead (sbx template build --ready-cmd '...')",
	"stopsignal":  "sandboxes are stopped by killing them; remove STOPSIGNAL",
}

// warnings are accepted and listed in Plan.Warnings: they do not do what
// Docker does, and a user relying on that should hear it.
var warnings = map[string]string{
	"volume": "sandboxes have one writable root filesystem, so nothing is mounted there and its files are part of the template; " +
		"create the directory with RUN mkdir -p if the start command needs it",
}

// noops are accepted and listed in Plan.Notes.
var noops = map[string]string{
	"expose":     "ports of a sandbox are reachable without EXPOSE",
	"label":      "labels are not stored",
	"maintainer": "maintainer is not stored",
}

func (p *planner) instruction(n *parser.Node) error {
	name := strings.ToLower(n.Value)
	if len(n.Heredocs) > 0 {
		return lineErr(n, "heredocs are not supported; put the script in a file, COPY it and RUN it")
	}
	if p.plan.From == "" && name != "from" && name != "arg" {
		return lineErr(n, "comes before FROM; the first instruction must be FROM (only ARG may precede it)")
	}
	if hint, ok := unsupported[name]; ok {
		return lineErr(n, "not supported by sbx: %s", hint)
	}
	if why, ok := warnings[name]; ok {
		p.plan.Warnings = append(p.plan.Warnings, fmt.Sprintf("line %d: %s has no effect (%s)",
			n.StartLine, strings.TrimSpace(n.Original), why))
		return nil
	}
	if why, ok := noops[name]; ok {
		p.plan.Notes = append(p.plan.Notes, fmt.Sprintf("line %d: %s has no effect (%s)", n.StartLine, strings.ToUpper(name), why))
		return nil
	}
	switch name {
	case "from":
		return p.from(n)
	case "arg":
		return p.arg(n)
	case "env":
		return p.envInstr(n)
	case "run":
		return p.run(n)
	case "copy", "add":
		return p.copyInstr(n, name)
	case "workdir":
		return p.workdir(n)
	case "user":
		return p.user(n)
	case "cmd", "entrypoint":
		return p.startCmd(n, name)
	}
	return lineErr(n, "unknown instruction; sbx supports FROM, RUN, COPY, ADD, ENV, ARG, WORKDIR, USER, CMD, ENTRYPOINT")
}

func (p *planner) from(n *parser.Node) error {
	if p.plan.From != "" {
		return lineErr(n, "multi-stage builds are not supported; build the artifacts in one stage (or outside) and COPY them")
	}
	if len(n.Flags) > 0 {
		return lineErr(n, "flags %v are not supported; sbx builds for the host's platform", n.Flags)
	}
	args := nodeArgs(n)
	if len(args) == 0 {
		return lineErr(n, "needs a base, e.g. FROM base")
	}
	if len(args) > 1 {
		return lineErr(n, "named stages (FROM x AS name) are not supported; use a single stage")
	}
	ref, err := p.expand(n, args[0])
	if err != nil {
		return err
	}
	if ref == "" || ref == "scratch" {
		return lineErr(n, "an empty base (scratch) is not supported; start FROM base or an image with a shell")
	}
	p.plan.From = ref
	if TemplateBase(ref) == "" {
		p.plan.FromImage = true
	}
	// As the E2B SDK's Dockerfile import does: Docker semantics start as
	// root in /, whatever the base template's defaults are. Both steps
	// belong to the FROM line, so every step names a line of the file.
	p.plan.Steps = append(p.plan.Steps, Step{Type: StepUser, Args: []string{"root"}, Line: n.StartLine},
		Step{Type: StepWorkdir, Args: []string{"/"}, Line: n.StartLine})
	return nil
}

func (p *planner) arg(n *parser.Node) error {
	for _, a := range nodeArgs(n) {
		k, v, hasDefault := strings.Cut(a, "=")
		if k == "" {
			return lineErr(n, "needs a name, e.g. ARG VERSION=1.0")
		}
		if hasDefault {
			ev, err := p.expand(n, v)
			if err != nil {
				return err
			}
			v = ev
		}
		if bv, ok := p.buildArgs[k]; ok {
			v, hasDefault = bv, true
		}
		if !hasDefault {
			v = ""
		}
		p.args[k] = v
		// Before FROM an ARG only parameterises FROM; after it RUN sees it
		// as an environment variable, which sbx (like the E2B SDK) records as ENV.
		if p.plan.From != "" {
			p.plan.Steps = append(p.plan.Steps, Step{Type: StepEnv, Args: []string{k, v}, Line: n.StartLine})
		}
	}
	return nil
}

func (p *planner) envInstr(n *parser.Node) error {
	a := nodeArgs(n)
	if len(a) == 0 || len(a)%3 != 0 {
		return lineErr(n, "needs KEY=value pairs, e.g. ENV PORT=8080")
	}
	var kv []string
	for i := 0; i < len(a); i += 3 {
		k := a[i]
		v, err := p.expand(n, a[i+1])
		if err != nil {
			return err
		}
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return lineErr(n, "invalid variable name %q", k)
		}
		p.env[k] = v
		kv = append(kv, k, v)
	}
	p.plan.Steps = append(p.plan.Steps, Step{Type: StepEnv, Args: kv, Line: n.StartLine})
	return nil
}

// badJSONForm reports an instruction written in the exec (JSON) form that is
// not valid JSON, such as CMD [ "sleep" or CMD ['app']. Docker silently runs
// such text as a shell command line (here: the test command "["), which
// fails only when a sandbox starts. A RUN may legitimately start with the
// test command ([ -f x ] && ...), so for RUN only text that cannot be one
// (a quote right after the bracket) counts.
func badJSONForm(n *parser.Node, name string) error {
	if n.Attributes["json"] {
		return nil
	}
	text := strings.TrimSpace(n.Original)
	if i := strings.IndexAny(text, " \t"); i >= 0 {
		text = strings.TrimSpace(text[i:])
	} else {
		return nil
	}
	for _, f := range n.Flags { // RUN --flag [...] (flags are rejected later anyway)
		text = strings.TrimSpace(strings.TrimPrefix(text, f))
	}
	if !strings.HasPrefix(text, "[") {
		return nil
	}
	if name == "run" && !strings.HasPrefix(text, `["`) && !strings.HasPrefix(text, "['") {
		return nil
	}
	why := "it is not a JSON array of strings"
	var arr []string
	if err := json.Unmarshal([]byte(text), &arr); err != nil {
		why = err.Error()
	}
	return lineErr(n, "%s looks like the exec form but is not valid JSON (%s); write it as %s [\"prog\", \"arg\"] "+
		"with double quotes and commas, or as a shell command line without brackets", text, why, strings.ToUpper(name))
}

// shellCommand turns RUN/CMD/ENTRYPOINT arguments (shell or JSON form) into
// one command line for /bin/sh -c.
func shellCommand(n *parser.Node) string {
	a := nodeArgs(n)
	if n.Attributes["json"] {
		q := make([]string, len(a))
		for i, s := range a {
			q[i] = shellQuote(s)
		}
		return strings.Join(q, " ")
	}
	return strings.Join(a, " ")
}

// shellQuote quotes s for POSIX sh unless it is made of safe characters.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (p *planner) run(n *parser.Node) error {
	for _, f := range n.Flags {
		return lineErr(n, "flag %s is not supported; RUN steps always have network access and no mounts", f)
	}
	if err := badJSONForm(n, "run"); err != nil {
		return err
	}
	cmd := strings.TrimSpace(shellCommand(n))
	if cmd == "" {
		return lineErr(n, "needs a command, e.g. RUN apt-get install -y curl")
	}
	p.plan.Steps = append(p.plan.Steps, Step{Type: StepRun, Args: []string{cmd}, Line: n.StartLine})
	return nil
}

func (p *planner) copyInstr(n *parser.Node, name string) error {
	var chown, chmod string
	for _, f := range n.Flags {
		k, v, _ := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		switch k {
		case "chown":
			chown = v
		case "chmod":
			chmod = v
		case "from":
			return lineErr(n, "--from is not supported (no multi-stage builds); COPY from the build context instead")
		default:
			return lineErr(n, "flag %s is not supported; sbx supports --chown and --chmod", f)
		}
	}
	var err error
	if chown, err = p.expand(n, chown); err != nil {
		return err
	}
	if chmod != "" {
		if len(chmod) > 4 || strings.Trim(chmod, "01234567") != "" {
			return lineErr(n, "--chmod=%s must be octal, e.g. --chmod=0755", chmod)
		}
		chmod = fmt.Sprintf("%04s", chmod)
	}
	a := nodeArgs(n)
	if len(a) < 2 {
		return lineErr(n, "needs a source and a destination, e.g. %s app.py /home/user/", strings.ToUpper(name))
	}
	dest, err := p.expand(n, a[len(a)-1])
	if err != nil {
		return err
	}
	srcs := a[:len(a)-1]
	if len(srcs) > 1 && !strings.HasSuffix(dest, "/") {
		return lineErr(n, "with several sources the destination must be a directory ending in /, e.g. %s a b /app/", strings.ToUpper(name))
	}
	for _, s := range srcs {
		src, err := p.expand(n, s)
		if err != nil {
			return err
		}
		if name == "add" && (strings.Contains(src, "://") || strings.HasPrefix(src, "git@")) {
			return lineErr(n, "remote sources (%s) are not supported; RUN curl -fsSL -o <dest> <url> instead", src)
		}
		if err := checkContextPath(src); err != nil {
			return lineErr(n, "%v", err)
		}
		typ := StepCopy
		if name == "add" {
			typ = StepAdd
		}
		p.plan.Steps = append(p.plan.Steps, Step{Type: typ, Args: []string{src, dest, chown, chmod}, Line: n.StartLine})
	}
	return nil
}

// checkContextPath rejects sources that leave the build context.
func checkContextPath(src string) error {
	c := strings.TrimPrefix(src, "/")
	for _, part := range strings.Split(c, "/") {
		if part == ".." {
			return fmt.Errorf("source %q leaves the build context; copy files from inside the context directory", src)
		}
	}
	return nil
}

func (p *planner) workdir(n *parser.Node) error {
	a := nodeArgs(n)
	if len(a) != 1 {
		return lineErr(n, "needs one path, e.g. WORKDIR /app")
	}
	dir, err := p.expand(n, a[0])
	if err != nil {
		return err
	}
	p.plan.Steps = append(p.plan.Steps, Step{Type: StepWorkdir, Args: []string{dir}, Line: n.StartLine})
	return nil
}

func (p *planner) user(n *parser.Node) error {
	a := nodeArgs(n)
	if len(a) != 1 || a[0] == "" {
		return lineErr(n, "needs a user name, e.g. USER user")
	}
	u, err := p.expand(n, a[0])
	if err != nil {
		return err
	}
	p.plan.Steps = append(p.plan.Steps, Step{Type: StepUser, Args: []string{u}, Line: n.StartLine})
	return nil
}

func (p *planner) startCmd(n *parser.Node, name string) error {
	if err := badJSONForm(n, name); err != nil {
		return err
	}
	cmd := strings.TrimSpace(shellCommand(n))
	if name == "entrypoint" {
		p.entry = cmd
	} else {
		p.cmd = cmd
	}
	p.plan.StartCmd = strings.TrimSpace(p.entry + " " + p.cmd)
	return nil
}

// MarshalGolden renders a plan as indented JSON (the golden-file format).
func (p *Plan) MarshalGolden() []byte {
	b, _ := json.MarshalIndent(p, "", "  ")
	return append(b, '\n')
}
