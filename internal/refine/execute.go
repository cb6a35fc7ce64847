package refine

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/sbxdev/sbx/internal/errdefs"
	"github.com/sbxdev/sbx/sdk"
)

// Language says how code of one language runs in a sandbox.
type Language struct {
	Name    string
	Display string
	// Aliases are accepted names and code-fence tags; the first is the
	// tag asked of the model.
	Aliases []string
	// Interpreter means: run through the code interpreter (RunCode), in
	// one kernel session so test code sees the program's definitions.
	Interpreter bool
	// Ext and Command run other languages as a file: Command is a shell
	// command with %s for the file path.
	Ext     string
	Command string
}

var languages = []Language{
	{Name: "python", Display: "Python", Aliases: []string{"python", "py", "python3"}, Interpreter: true},
	{Name: "bash", Display: "Bash", Aliases: []string{"bash", "sh", "shell"}, Ext: "sh", Command: "bash %s"},
	{Name: "javascript", Display: "JavaScript (Node.js)", Aliases: []string{"javascript", "js", "node"}, Ext: "js", Command: "node %s"},
	{Name: "ruby", Display: "Ruby", Aliases: []string{"ruby", "rb"}, Ext: "rb", Command: "ruby %s"},
	{Name: "go", Display: "Go", Aliases: []string{"go", "golang"}, Ext: "go", Command: "go run %s"},
	{Name: "r", Display: "R", Aliases: []string{"r"}, Ext: "R", Command: "Rscript %s"},
}

// LookupLanguage finds a language by name or alias ("" means python).
func LookupLanguage(name string) (Language, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	if n == "" {
		return languages[0], nil
	}
	var names []string
	for _, l := range languages {
		for _, a := range l.Aliases {
			if a == n {
				return l, nil
			}
		}
		names = append(names, l.Name)
	}
	return Language{}, fmt.Errorf("unknown language %q: use one of %s", name, strings.Join(names, ", "))
}

// Sandboxes is the sandbox service as the executor uses it (*sdk.Client).
type Sandboxes interface {
	Create(ctx context.Context, opts sdk.CreateOptions) (*sdk.Sandbox, error)
	Kill(ctx context.Context, id string) error
	ListTemplates(ctx context.Context) ([]sdk.Template, error)
}

// Prices of sandbox time, per allocated vCPU-second and GiB-second.
const (
	USDPerVCPUSecond = 0.000014
	USDPerGiBSecond  = 0.0000045
)

// Cost prices a sandbox that lived for d with cpus vCPUs and memMB MiB.
func Cost(d time.Duration, cpus, memMB int) float64 {
	s := d.Seconds()
	return s*float64(cpus)*USDPerVCPUSecond + s*float64(memMB)/1024*USDPerGiBSecond
}

// Executor runs attempts in sandboxes: one fresh sandbox per attempt,
// killed afterwards, as the seed does.
type Executor struct {
	sbx Sandboxes
	log *slog.Logger

	envs  *Environments
	kills sync.WaitGroup // background kills of finished attempts
}

// Environments caches what templates offer (the probe's findings, vCPUs
// and memory) so only the first refinement on a template pays for the
// probe sandbox. It is safe for concurrent use; entries expire after ttl
// (0 = never) because templates can be rebuilt.
type Environments struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]envEntry
}

type envEntry struct {
	env *Environment
	at  time.Time
}

// NewEnvironments returns an empty cache.
func NewEnvironments(ttl time.Duration) *Environments {
	return &Environments{ttl: ttl, m: map[string]envEntry{}}
}

func (c *Environments) get(tpl string) (envEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[tpl]
	if ok && c.ttl > 0 && time.Since(e.at) > c.ttl {
		delete(c.m, tpl)
		return envEntry{}, false
	}
	return e, ok
}

func (c *Environments) put(tpl string, e envEntry) {
	e.at = time.Now()
	c.mu.Lock()
	c.m[tpl] = e
	c.mu.Unlock()
}

// Wait blocks until the sandboxes of finished attempts are killed.
func (e *Executor) Wait() { e.kills.Wait() }

// NewExecutor returns an executor over a sandbox service.
func NewExecutor(sbx Sandboxes, log *slog.Logger) *Executor {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Executor{sbx: sbx, log: log, envs: NewEnvironments(0)}
}

// ShareEnvironments makes e use (and fill) a cache shared with other
// executors of the same team.
func (e *Executor) ShareEnvironments(c *Environments) { e.envs = c }

func (e *Executor) metadata(opts Options, extra map[string]string) map[string]string {
	md := map[string]string{}
	for k, v := range opts.Metadata {
		md[k] = v
	}
	for k, v := range extra {
		md[k] = v
	}
	md[MetadataKey] = opts.ID
	return md
}

// probeScript prints the OS, interpreter versions, tools and installed
// Python distributions; it runs through envd, so it works in any template.
const probeScript = `. /etc/os-release 2>/dev/null; echo "OS: ${PRETTY_NAME:-$(uname -sr)}"
tools=""; for t in python3 node go ruby Rscript gcc; do command -v $t >/dev/null 2>&1 && tools="$tools $t"; done; echo "Tools:$tools"
python3 - <<'PY' 2>/dev/null
import sys, importlib.metadata as m
print("Python", sys.version.split()[0])
print("PKGS " + " ".join(sorted({(d.metadata["Name"] or "").lower() + "==" + d.version for d in m.distributions() if d.metadata["Name"]})))
PY
true`

// Environment describes the template for the prompt, probing a sandbox of
// it unless the cache knows it (the probe sandbox is tagged with the
// refinement that caused it and killed at once).
func (e *Executor) Environment(ctx context.Context, opts Options, lang Language) (*Environment, error) {
	if c, ok := e.envs.get(opts.Template); ok {
		return c.env, nil
	}
	cpus, memMB, err := e.resources(ctx, opts.Template)
	if err != nil {
		return nil, err
	}
	sb, err := e.sbx.Create(ctx, sdk.CreateOptions{Template: opts.Template, Timeout: 2 * time.Minute,
		Metadata: e.metadata(opts, map[string]string{"refinement_phase": "probe"})})
	if err != nil {
		return nil, fmt.Errorf("probe template %q: %w", opts.Template, err)
	}
	defer e.kill(ctx, sb.ID)
	out, err := sb.Commands.Run(ctx, probeScript, sdk.RunOptions{Timeout: 30 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("probe template %q in sandbox %s: %w", opts.Template, sb.ID, err)
	}
	env := &Environment{Template: opts.Template, Description: describeTemplate(opts.Template), ProbeSandboxID: sb.ID,
		CPUs: cpus, MemoryMB: memMB}
	var sys []string
	for _, line := range strings.Split(out.Stdout, "\n") {
		if pk, ok := strings.CutPrefix(line, "PKGS "); ok {
			env.Packages = strings.Fields(pk)
		} else if line = strings.TrimSpace(line); line != "" {
			sys = append(sys, line)
		}
	}
	env.System = strings.Join(sys, "; ")
	e.envs.put(opts.Template, envEntry{env: env})
	return env, nil
}

// resources learns the template's vCPUs and memory for pricing.
func (e *Executor) resources(ctx context.Context, tpl string) (cpus, memMB int, err error) {
	tpls, err := e.sbx.ListTemplates(ctx)
	if err != nil {
		return 0, 0, err // the SDK already says "list templates"
	}
	var names []string
	for _, t := range tpls {
		hit := t.TemplateID == tpl
		for _, n := range append(append([]string{}, t.Names...), t.Aliases...) {
			hit = hit || n == tpl
		}
		if hit {
			return max(t.CPUCount, 1), t.MemoryMB, nil
		}
		names = append(names, t.TemplateID)
	}
	sort.Strings(names)
	return 0, 0, errdefs.NotFound("template %q not found; available: %s", tpl, strings.Join(names, ", "))
}

func (e *Executor) kill(ctx context.Context, id string) {
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := e.sbx.Kill(kctx, id); err != nil && !sdk.IsNotFound(err) {
		e.log.Warn("kill sandbox", "sandbox.id", id, "err", err)
	}
}

// Execute runs a.Code in a fresh sandbox and fills a's outcome: output,
// error, results, test validation, sandbox ID, lifetime and cost. The
// returned error is for machinery failures only.
func (e *Executor) Execute(ctx context.Context, opts Options, lang Language, env *Environment, a *Attempt) error {
	t0 := time.Now()
	sb, err := e.sbx.Create(ctx, sdk.CreateOptions{Template: opts.Template, Timeout: opts.RunTimeout*2 + time.Minute,
		Metadata: e.metadata(opts, map[string]string{"refinement_attempt": strconv.Itoa(a.Number)})})
	if err != nil {
		return err
	}
	a.SandboxID = sb.ID
	a.SandboxMS = ms(time.Since(t0))
	defer func() {
		// The kill runs off the loop's critical path (the next prompt does
		// not need it); Wait collects it. The sandbox is priced up to the
		// kill request, when its work ended.
		life := time.Since(t0)
		a.SandboxSeconds = life.Seconds()
		a.SandboxCostUSD = Cost(life, env.CPUs, env.MemoryMB)
		e.kills.Add(1)
		go func() {
			defer e.kills.Done()
			e.kill(ctx, sb.ID)
		}()
	}()
	if lang.Interpreter {
		return e.runInterpreter(ctx, sb, opts, a)
	}
	return e.runCommand(ctx, sb, opts, lang, a)
}

func (e *Executor) runInterpreter(ctx context.Context, sb *sdk.Sandbox, opts Options, a *Attempt) error {
	t0 := time.Now()
	x, err := sb.RunCode(ctx, a.Code, &sdk.RunCodeOptions{Timeout: opts.RunTimeout})
	a.ExecMS = ms(time.Since(t0))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			a.Error = &ExecError{Name: "TimeoutError", Value: fmt.Sprintf("the code did not finish within %v", opts.RunTimeout)}
			return nil
		}
		var ae *sdk.APIError
		if errors.As(err, &ae) && ae.Status == http.StatusBadGateway && !sdk.IsSandboxNotRunning(err) {
			return fmt.Errorf("template %q runs no code interpreter (port %d is closed): use --template code-interpreter "+
				"or a template built from it, or a command language such as --language bash: %w",
				opts.Template, sdk.CodeInterpreterPort, err)
		}
		return err
	}
	a.Stdout, a.Stderr = capOutput(strings.Join(x.Logs.Stdout, "")), capOutput(strings.Join(x.Logs.Stderr, ""))
	if x.Error != nil {
		a.Error = &ExecError{Name: x.Error.Name, Value: x.Error.Value, Traceback: x.Error.Traceback}
	}
	if a.Results, err = saveResults(opts.ImagesDir, a.Number, x.Results); err != nil {
		return err
	}
	if a.Error != nil || opts.TestCode == "" {
		return nil
	}
	v0 := time.Now()
	defer func() { a.ValidateMS += ms(time.Since(v0)) }()
	tx, err := sb.RunCode(ctx, opts.TestCode, &sdk.RunCodeOptions{Timeout: opts.RunTimeout})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			a.Validation = fmt.Sprintf("the test code did not finish within %v", opts.RunTimeout)
			return nil
		}
		return fmt.Errorf("run test code: %w", err)
	}
	if tx.Error != nil {
		a.Validation = "the test code failed: " + TrimTraceback(&ExecError{Name: tx.Error.Name, Value: tx.Error.Value, Traceback: tx.Error.Traceback})
	}
	return nil
}

func (e *Executor) runCommand(ctx context.Context, sb *sdk.Sandbox, opts Options, lang Language, a *Attempt) error {
	t0 := time.Now()
	dir := "/home/user/refine"
	file := dir + "/main." + lang.Ext
	if _, err := sb.Files.Write(ctx, file, []byte(a.Code)); err != nil {
		return fmt.Errorf("write code to sandbox: %w", err)
	}
	res, exitErr, err := runFile(ctx, sb, dir, lang, file, opts.RunTimeout)
	a.ExecMS = ms(time.Since(t0))
	if err != nil {
		return err
	}
	a.Stdout, a.Stderr = capOutput(res.Stdout), capOutput(res.Stderr)
	if exitErr != nil {
		a.Error = exitErr
		return nil
	}
	if opts.TestCode == "" {
		return nil
	}
	v0 := time.Now()
	defer func() { a.ValidateMS += ms(time.Since(v0)) }()
	test := dir + "/test." + lang.Ext
	if _, err := sb.Files.Write(ctx, test, []byte(opts.TestCode)); err != nil {
		return fmt.Errorf("write test code to sandbox: %w", err)
	}
	_, testErr, err := runFile(ctx, sb, dir, lang, test, opts.RunTimeout)
	if err != nil {
		return fmt.Errorf("run test code: %w", err)
	}
	if testErr != nil {
		a.Validation = "the test code failed: " + TrimTraceback(testErr)
	}
	return nil
}

// runFile runs a file with the language's command. A non-zero exit is an
// ExecError carrying stderr as its traceback, not an error.
func runFile(ctx context.Context, sb *sdk.Sandbox, dir string, lang Language, file string, timeout time.Duration) (*sdk.CommandResult, *ExecError, error) {
	res, err := sb.Commands.Run(ctx, fmt.Sprintf(lang.Command, file), sdk.RunOptions{Cwd: dir, Timeout: timeout})
	var exit *sdk.CommandExitError
	switch {
	case errors.As(err, &exit):
		name := "ExitError"
		val := fmt.Sprintf("the program exited with code %d", exit.ExitCode)
		if exit.ExitCode == 127 {
			val += fmt.Sprintf(" (command not found: is %s installed in this template?)", strings.Fields(lang.Command)[0])
		}
		if exit.ExitCode == 137 || exit.ExitCode == -1 {
			name, val = "TimeoutError", fmt.Sprintf("the program was killed (exit %d); it may have run longer than %v", exit.ExitCode, timeout)
		}
		return exit.CommandResult, &ExecError{Name: name, Value: val, Traceback: exit.Stderr}, nil
	case err != nil:
		return nil, nil, err
	}
	return res, nil, nil
}

// saveResults summarises rich results and writes their images to
// dir/attempt-N/result-K.ext when dir is set.
func saveResults(dir string, attempt int, results []sdk.Result) ([]Output, error) {
	var out []Output
	for i, r := range results {
		o := Output{Formats: r.Formats(), Text: r.Text}
		sort.Strings(o.Formats)
		for _, img := range []struct {
			ext, data string
			b64       bool
		}{{"png", r.PNG, true}, {"jpeg", r.JPEG, true}, {"svg", r.SVG, false}} {
			if img.data == "" || dir == "" {
				continue
			}
			data := []byte(img.data)
			if img.b64 {
				var err error
				if data, err = base64.StdEncoding.DecodeString(img.data); err != nil {
					return out, fmt.Errorf("result %d of attempt %d: %s is not valid base64: %w", i+1, attempt, img.ext, err)
				}
			}
			sub := filepath.Join(dir, fmt.Sprintf("attempt-%d", attempt))
			if err := os.MkdirAll(sub, 0o755); err != nil {
				return out, fmt.Errorf("images directory: %w", err)
			}
			p := filepath.Join(sub, fmt.Sprintf("result-%d.%s", i+1, img.ext))
			if err := os.WriteFile(p, data, 0o644); err != nil {
				return out, fmt.Errorf("save image: %w", err)
			}
			o.Files = append(o.Files, p)
		}
		out = append(out, o)
	}
	return out, nil
}

// MaxOutputBytes caps the stdout and stderr kept per attempt: a program
// printing in a loop must not bloat results, streams and the database.
const MaxOutputBytes = 1 << 20

// capOutput keeps the end of s (where results and errors are), marked.
func capOutput(s string) string {
	if len(s) <= MaxOutputBytes {
		return s
	}
	cut := len(s) - MaxOutputBytes
	for cut < len(s) && !utf8.RuneStart(s[cut]) {
		cut++ // do not split a character
	}
	return fmt.Sprintf("[... first %d bytes omitted ...]\n", cut) + s[cut:]
}
