// Package refine runs iterative refinement: an LLM writes code for a
// requirement, a sandbox runs it, the error goes back into the next prompt,
// until the code passes validation or the attempts run out. Every attempt
// is recorded (code, output, error, images, timings, tokens, sandbox and
// its cost) and every sandbox carries the metadata refinement_id, so its
// lifecycle events and webhooks carry the correlation ID.
//
// The loop is composed from workflow steps, as in the seed:
// Retry(Parallel(best-of-N, Chain(generate, execute, validate))).
package refine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/llm"
	"github.com/sbxdev/sbx/internal/workflow"
)

// Generator is the LLM as the loop uses it (llm.Client satisfies it).
type Generator interface {
	Complete(ctx context.Context, req llm.Request) (llm.Response, error)
}

// Options describe one refinement.
type Options struct {
	// ID is the correlation ID; empty means a fresh "ref_" + 16 hex.
	ID          string `json:"id,omitempty"`
	Requirement string `json:"requirement"`
	// Template of the sandboxes; empty means "code-interpreter".
	Template string `json:"template,omitempty"`
	// Language of the generated code; empty means python.
	Language string `json:"language,omitempty"`
	// MaxAttempts bounds the generate-execute-validate rounds; 0 means 3.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// BestOf runs this many candidates per round in parallel and keeps the
	// first that passes; 0 or 1 means one.
	BestOf int `json:"best_of,omitempty"`
	// TestCode runs after the generated code, in the same session for
	// Python; if it fails, the attempt fails.
	TestCode string `json:"test_code,omitempty"`
	// Expect is a regular expression stdout must match.
	Expect string `json:"expect,omitempty"`
	// RunTimeout bounds one execution; 0 means 60 s.
	RunTimeout time.Duration `json:"-"`
	// ImagesDir, when set, receives the image results of every attempt as
	// <ImagesDir>/attempt-<N>/result-<K>.<ext>.
	ImagesDir string `json:"-"`
	// Metadata is added to every sandbox's metadata.
	Metadata map[string]string `json:"metadata,omitempty"`
}

// Defaults used when Options leave them zero.
const (
	DefaultTemplate    = "code-interpreter"
	DefaultMaxAttempts = 3
	DefaultRunTimeout  = 60 * time.Second
	// MaxAttemptsLimit and MaxBestOf bound what a request may ask for.
	MaxAttemptsLimit = 20
	MaxBestOf        = 8
	// MetadataKey is the sandbox metadata key carrying the correlation ID.
	MetadataKey = "refinement_id"
)

var idRE = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

// Validate fills defaults and rejects options that cannot work, saying why.
func (o *Options) Validate() error {
	if strings.TrimSpace(o.Requirement) == "" {
		return errors.New("empty requirement: say what the code should do")
	}
	if o.ID == "" {
		o.ID = NewID()
	} else if !idRE.MatchString(o.ID) {
		return fmt.Errorf("invalid refinement id %q: use 1-64 letters, digits, '_', '.', ':' or '-'", o.ID)
	}
	if o.Template == "" {
		o.Template = DefaultTemplate
	}
	if _, err := LookupLanguage(o.Language); err != nil {
		return err
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.MaxAttempts < 1 || o.MaxAttempts > MaxAttemptsLimit {
		return fmt.Errorf("max attempts %d out of range: use 1 to %d", o.MaxAttempts, MaxAttemptsLimit)
	}
	if o.BestOf == 0 {
		o.BestOf = 1
	}
	if o.BestOf < 1 || o.BestOf > MaxBestOf {
		return fmt.Errorf("best-of %d out of range: use 1 to %d", o.BestOf, MaxBestOf)
	}
	if o.Expect != "" {
		if _, err := regexp.Compile(o.Expect); err != nil {
			return fmt.Errorf("invalid expected-output pattern %q: %w (Go RE2 syntax)", o.Expect, err)
		}
	}
	if o.RunTimeout == 0 {
		o.RunTimeout = DefaultRunTimeout
	}
	if o.RunTimeout < 0 {
		return fmt.Errorf("negative run timeout %v", o.RunTimeout)
	}
	return nil
}

// NewID returns a fresh correlation ID.
func NewID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "ref_" + hex.EncodeToString(b)
}

// ExecError is an error raised by the generated code (or the reason it
// could not run: no code block, non-zero exit).
type ExecError struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	Traceback string `json:"traceback,omitempty"`
}

func (e *ExecError) String() string { return e.Name + ": " + e.Value }

// Output is one rich result of an execution.
type Output struct {
	Formats []string `json:"formats"`
	Text    string   `json:"text,omitempty"`
	Files   []string `json:"files,omitempty"` // images saved under Options.ImagesDir
}

// Attempt is one generate-execute-validate round of one candidate.
type Attempt struct {
	Number    int        `json:"number"`
	Candidate int        `json:"candidate,omitempty"`
	Passed    bool       `json:"passed"`
	Code      string     `json:"code"`
	Stdout    string     `json:"stdout"`
	Stderr    string     `json:"stderr"`
	Error     *ExecError `json:"error,omitempty"`
	// Validation says why an attempt whose code ran was rejected (test
	// failed, output did not match).
	Validation string   `json:"validation,omitempty"`
	Results    []Output `json:"results,omitempty"`

	Model  string    `json:"model,omitempty"`
	Tokens llm.Usage `json:"tokens"`

	SandboxID      string  `json:"sandbox_id,omitempty"`
	SandboxSeconds float64 `json:"sandbox_seconds"`
	SandboxCostUSD float64 `json:"sandbox_cost_usd"`

	StartedAt time.Time `json:"started_at"`
	// Timings in milliseconds. Overhead is everything but the LLM: sandbox
	// claim, execution, validation and teardown.
	DurationMS float64 `json:"duration_ms"`
	LLMMS      float64 `json:"llm_ms"`
	SandboxMS  float64 `json:"sandbox_create_ms"`
	ExecMS     float64 `json:"exec_ms"`
	ValidateMS float64 `json:"validate_ms"`
	OverheadMS float64 `json:"overhead_ms"`
}

func (a *Attempt) summary() string {
	switch {
	case a.Error != nil:
		return a.Error.String()
	case a.Validation != "":
		return a.Validation
	}
	return "failed"
}

// Status values of a Result.
const (
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
)

// Result is a whole refinement.
type Result struct {
	ID          string       `json:"id"`
	Status      string       `json:"status"`
	Success     bool         `json:"success"`
	Requirement string       `json:"requirement"`
	Template    string       `json:"template"`
	Language    string       `json:"language"`
	MaxAttempts int          `json:"max_attempts"`
	Environment *Environment `json:"environment,omitempty"`
	Attempts    []*Attempt   `json:"attempts"`
	// Code and Output are the passing attempt's, or the last attempt's on failure.
	Code   string `json:"code"`
	Output string `json:"output"`
	// Error says why the refinement failed; LastError is the last
	// attempt's execution error.
	Error     string     `json:"error,omitempty"`
	LastError *ExecError `json:"last_error,omitempty"`

	Tokens         llm.Usage `json:"tokens"`
	SandboxCostUSD float64   `json:"sandbox_cost_usd"`
	StartedAt      time.Time `json:"started_at"`
	FinishedAt     time.Time `json:"finished_at,omitzero"`
	DurationMS     float64   `json:"duration_ms"`
}

// Refiner runs refinements with one LLM and one sandbox service.
type Refiner struct {
	gen  Generator
	exec *Executor
	log  *slog.Logger
}

// New returns a refiner.
func New(gen Generator, exec *Executor, log *slog.Logger) *Refiner {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Refiner{gen: gen, exec: exec, log: log}
}

// Observer receives progress; both callbacks may be nil. Calls are
// serialised.
type Observer struct {
	OnStart   func(r *Result)
	OnAttempt func(a *Attempt)
}

// state is the value the workflow steps pass along.
type state struct {
	cur      *Attempt // the attempt being built
	feedback *Attempt // the last failed attempt, for the prompt
}

// attemptFailed marks a failure of the generated code (retry with
// feedback), as opposed to a failure of the machinery (stop).
type attemptFailed struct{ a *Attempt }

func (e *attemptFailed) Error() string {
	return fmt.Sprintf("attempt %d: %s", e.a.Number, e.a.summary())
}

// Run runs a refinement to the end and returns its result. err is non-nil
// only when the machinery failed (bad options, LLM unreachable or
// rejecting the key, sandbox service down, ctx cancelled); code that never
// passes is a Result with Success false and a nil error.
func (r *Refiner) Run(ctx context.Context, opts Options, obs Observer) (*Result, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	lang, _ := LookupLanguage(opts.Language)
	x := &runner{Refiner: r, opts: opts, lang: lang, obs: obs,
		log: r.log.With("refinement.id", opts.ID, "template.id", opts.Template),
		res: &Result{ID: opts.ID, Status: StatusRunning, Requirement: opts.Requirement, Template: opts.Template,
			Language: lang.Name, MaxAttempts: opts.MaxAttempts, Attempts: []*Attempt{}, StartedAt: time.Now().UTC()}}
	env, err := r.exec.Environment(ctx, opts, lang)
	if err != nil {
		return x.finish(err)
	}
	x.env, x.res.Environment = env, env
	if obs.OnStart != nil {
		obs.OnStart(x.res)
	}

	// The seed's generator >> executor >> validator, with best-of-N
	// candidates per round and the rounds retried with feedback.
	candidate := workflow.Chain[state](workflow.Func[state](x.generate), workflow.Func[state](x.execute), workflow.Func[state](x.validate))
	loop := workflow.Retry[state](workflow.Parallel[state](opts.BestOf, x.recorded(candidate)), workflow.RetryOptions{
		Attempts:  opts.MaxAttempts,
		Retryable: func(err error) bool { var af *attemptFailed; return errors.As(err, &af) },
	})
	_, err = loop.Run(ctx, state{})
	var af *attemptFailed
	if errors.As(err, &af) {
		// The code never passed: a normal outcome, not a machinery failure.
		x.mu.Lock()
		x.res.Error = fmt.Sprintf("no attempt passed after %d rounds; last: %s", opts.MaxAttempts, af.a.summary())
		x.mu.Unlock()
		return x.finish(nil)
	}
	if err == nil {
		x.mu.Lock()
		for _, a := range x.res.Attempts {
			if a.Passed { // the winner, even if a losing candidate was recorded later
				x.res.Code, x.res.Output, x.res.LastError = a.Code, a.Stdout, nil
			}
		}
		x.mu.Unlock()
	}
	return x.finish(err)
}

// runner is one refinement in progress; its methods are the workflow steps.
type runner struct {
	*Refiner
	opts Options
	lang Language
	env  *Environment
	obs  Observer
	log  *slog.Logger

	mu      sync.Mutex // guards the fields below and serialises obs calls
	res     *Result
	number  int        // attempts started
	history []*Attempt // failed attempts, in order
}

// generate asks the LLM for code, with the last failure as feedback.
func (x *runner) generate(ctx context.Context, s state) (state, error) {
	x.mu.Lock()
	x.number++
	a := &Attempt{Number: x.number, Candidate: workflow.Candidate(ctx), StartedAt: time.Now().UTC()}
	var earlier []*Attempt
	for _, h := range x.history {
		if s.feedback == nil || h.Number != s.feedback.Number {
			earlier = append(earlier, h)
		}
	}
	x.mu.Unlock()
	s.cur = a
	req := prompt{Requirement: x.opts.Requirement, Lang: x.lang, Env: x.env, TestCode: x.opts.TestCode,
		Expect: x.opts.Expect, Previous: s.feedback, Earlier: earlier}.request()
	if x.opts.BestOf > 1 && a.Candidate > 0 {
		// Vary the candidates so best-of-N is not N copies of one answer.
		t := 0.4 + 0.2*float64(a.Candidate)
		req.Temperature = &t
	}
	t0 := time.Now()
	resp, err := x.gen.Complete(ctx, req)
	a.LLMMS = ms(time.Since(t0))
	a.Tokens, a.Model = resp.Usage, resp.Model
	if err != nil {
		if errors.Is(err, llm.ErrMalformed) {
			// A nonsense reply is the model's failure, not ours: count
			// the attempt and ask again.
			a.Error = &ExecError{Name: "MalformedReply", Value: err.Error()}
			return s, &attemptFailed{a}
		}
		return s, fmt.Errorf("generate code (attempt %d): %w", a.Number, err)
	}
	code, ok := ExtractCode(resp.Text, x.lang)
	if !ok {
		a.Code = resp.Text
		a.Error = &ExecError{Name: "NoCodeBlock",
			Value: fmt.Sprintf("the reply had no fenced code block; reply with the program inside ```%s ... ```", x.lang.Aliases[0])}
		return s, &attemptFailed{a}
	}
	a.Code = code
	return s, nil
}

// execute runs the code in a fresh sandbox; the error and the test code
// are checked there, while the sandbox is alive.
func (x *runner) execute(ctx context.Context, s state) (state, error) {
	if err := x.exec.Execute(ctx, x.opts, x.lang, x.env, s.cur); err != nil {
		return s, fmt.Errorf("execute attempt %d: %w", s.cur.Number, err)
	}
	if s.cur.Error != nil || s.cur.Validation != "" {
		return s, &attemptFailed{s.cur}
	}
	return s, nil
}

// validate checks what needs no sandbox: the expected-output pattern.
func (x *runner) validate(_ context.Context, s state) (state, error) {
	t0 := time.Now()
	if x.opts.Expect != "" {
		re := regexp.MustCompile(x.opts.Expect) // checked by Validate
		if !re.MatchString(s.cur.Stdout) && !re.MatchString(mainText(s.cur)) {
			s.cur.Validation = fmt.Sprintf("standard output does not match the expected pattern %q", x.opts.Expect)
		}
	}
	s.cur.ValidateMS += ms(time.Since(t0))
	if s.cur.Validation != "" {
		return s, &attemptFailed{s.cur}
	}
	s.cur.Passed = true
	return s, nil
}

// recorded wraps one candidate so its attempt is recorded whatever the
// outcome, and a failure of the code becomes the next round's feedback.
func (x *runner) recorded(candidate workflow.Step[state]) workflow.Step[state] {
	return workflow.Func[state](func(ctx context.Context, s state) (state, error) {
		out, err := candidate.Run(ctx, s)
		if out.cur == nil {
			return out, err
		}
		var af *attemptFailed
		failed := errors.As(err, &af)
		if err != nil && !failed && out.cur.Error == nil {
			// Cut short by the machinery or by a sibling candidate that
			// passed first: say so rather than record a silent failure.
			out.cur.Error = &ExecError{Name: "Aborted", Value: err.Error()}
		}
		out.cur.DurationMS = ms(time.Since(out.cur.StartedAt))
		out.cur.OverheadMS = out.cur.DurationMS - out.cur.LLMMS
		x.record(out.cur)
		if failed {
			out.feedback = out.cur
		}
		return out, err
	})
}

func (x *runner) record(a *Attempt) {
	x.mu.Lock()
	defer x.mu.Unlock()
	r := x.res
	r.Attempts = append(r.Attempts, a)
	r.Tokens = r.Tokens.Add(a.Tokens)
	r.SandboxCostUSD += a.SandboxCostUSD
	r.Code, r.Output, r.LastError = a.Code, a.Stdout, a.Error
	if a.Passed {
		r.Success = true
	} else {
		x.history = append(x.history, a)
	}
	if x.obs.OnAttempt != nil {
		x.obs.OnAttempt(a)
	}
}

func (x *runner) finish(err error) (*Result, error) {
	x.exec.Wait() // no sandbox of this run outlives it
	x.mu.Lock()
	defer x.mu.Unlock()
	r := x.res
	r.FinishedAt = time.Now().UTC()
	r.DurationMS = ms(r.FinishedAt.Sub(r.StartedAt))
	r.Status = StatusFailed
	if r.Success {
		r.Status = StatusSucceeded
	}
	if err != nil && r.Error == "" {
		r.Error = err.Error()
	}
	x.log.Info("refinement finished", "success", r.Success, "attempts", len(r.Attempts), "err", err)
	return r, err
}

func mainText(a *Attempt) string {
	var b strings.Builder
	for _, r := range a.Results {
		b.WriteString(r.Text)
		b.WriteByte('\n')
	}
	return b.String()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
