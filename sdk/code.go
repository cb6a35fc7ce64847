package sdk

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// CodeInterpreterPort is the port of the code interpreter in sandboxes made
// from the code-interpreter template.
const CodeInterpreterPort = 49999

// RunCodeOptions tune one RunCode call. All fields are optional.
type RunCodeOptions struct {
	// Language selects the default context of a language ("python" when
	// empty, "bash", or any kernel installed in the template). Mutually
	// exclusive with ContextID.
	Language string
	// ContextID runs the code in a context made by CreateCodeContext.
	ContextID string
	// Envs are environment variables set for this run only.
	Envs map[string]string
	// Timeout bounds the whole run; 0 means only ctx bounds it. When it
	// expires the request is dropped, which interrupts the code.
	Timeout time.Duration

	// Streaming callbacks, called in order as output arrives.
	OnStdout func(OutputMessage)
	OnStderr func(OutputMessage)
	OnResult func(Result)
	OnError  func(ExecutionError)
}

// OutputMessage is one chunk printed to stdout or stderr.
type OutputMessage struct {
	Line      string
	Timestamp time.Time
	Error     bool // true for stderr
}

// Result is one rich output: the value of the last expression
// (IsMainResult) or something displayed. Image and PDF fields are base64.
type Result struct {
	Text         string                     `json:"text,omitempty"`
	HTML         string                     `json:"html,omitempty"`
	Markdown     string                     `json:"markdown,omitempty"`
	SVG          string                     `json:"svg,omitempty"`
	PNG          string                     `json:"png,omitempty"`
	JPEG         string                     `json:"jpeg,omitempty"`
	PDF          string                     `json:"pdf,omitempty"`
	LaTeX        string                     `json:"latex,omitempty"`
	JavaScript   string                     `json:"javascript,omitempty"`
	JSON         json.RawMessage            `json:"json,omitempty"`
	Data         json.RawMessage            `json:"data,omitempty"`
	Chart        json.RawMessage            `json:"chart,omitempty"`
	Extra        map[string]json.RawMessage `json:"extra,omitempty"`
	IsMainResult bool                       `json:"is_main_result"`
}

// Formats lists the non-empty representations of r ("png", "html"…).
func (r Result) Formats() []string {
	var f []string
	for _, p := range []struct {
		name string
		set  bool
	}{
		{"text", r.Text != ""}, {"html", r.HTML != ""}, {"markdown", r.Markdown != ""}, {"svg", r.SVG != ""},
		{"png", r.PNG != ""}, {"jpeg", r.JPEG != ""}, {"pdf", r.PDF != ""}, {"latex", r.LaTeX != ""},
		{"javascript", r.JavaScript != ""}, {"json", len(r.JSON) > 0}, {"data", len(r.Data) > 0}, {"chart", len(r.Chart) > 0},
	} {
		if p.set {
			f = append(f, p.name)
		}
	}
	for k := range r.Extra {
		f = append(f, k)
	}
	return f
}

// ExecutionError is an error raised by the executed code (or a kernel
// failure such as UnexpectedEndOfExecution). It is reported in
// Execution.Error, not as RunCode's error.
type ExecutionError struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	Traceback string `json:"traceback"`
}

func (e *ExecutionError) Error() string { return e.Name + ": " + e.Value }

// Logs are everything printed during a run, chunk by chunk.
type Logs struct {
	Stdout []string `json:"stdout"`
	Stderr []string `json:"stderr"`
}

// Execution is the outcome of RunCode.
type Execution struct {
	Results        []Result        `json:"results"`
	Logs           Logs            `json:"logs"`
	Error          *ExecutionError `json:"error,omitempty"`
	ExecutionCount int             `json:"execution_count,omitempty"`
}

// Text returns the text of the main result, or "" if there is none.
func (e *Execution) Text() string {
	for _, r := range e.Results {
		if r.IsMainResult {
			return r.Text
		}
	}
	return ""
}

// ErrIncompleteExecution means the output stream ended before the server
// said the execution was over (connection cut).
var ErrIncompleteExecution = errors.New("code execution stream ended early")

// RunCode runs code in the sandbox's code interpreter and waits for it to
// finish, calling opts' callbacks as output arrives. An error raised by
// the code is in Execution.Error; the returned error is for failures to
// run it at all (sandbox gone, unknown context, ctx cancelled). The
// sandbox must come from a template that runs the code interpreter
// (code-interpreter).
func (s *Sandbox) RunCode(ctx context.Context, code string, opts *RunCodeOptions) (*Execution, error) {
	if opts == nil {
		opts = &RunCodeOptions{}
	}
	if opts.Language != "" && opts.ContextID != "" {
		return nil, fmt.Errorf("run code: set Language or ContextID, not both (a context already has a language)")
	}
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	body := map[string]any{"code": code}
	if opts.Language != "" {
		body["language"] = opts.Language
	}
	if opts.ContextID != "" {
		body["context_id"] = opts.ContextID
	}
	if len(opts.Envs) > 0 {
		body["env_vars"] = opts.Envs
	}
	resp, err := s.codeRequest(ctx, http.MethodPost, "/execute", body)
	if err != nil {
		return nil, fmt.Errorf("run code in sandbox %s: %w", s.ID, err)
	}
	defer resp.Body.Close()

	exec := &Execution{Results: []Result{}, Logs: Logs{Stdout: []string{}, Stderr: []string{}}}
	sc := bufio.NewScanner(resp.Body)
	// A result line carries whole images; allow large lines.
	sc.Buffer(make([]byte, 64<<10), 256<<20)
	for sc.Scan() {
		done, err := exec.apply(sc.Bytes(), opts)
		if err != nil {
			return exec, fmt.Errorf("run code in sandbox %s: %w", s.ID, err)
		}
		if done {
			return exec, nil
		}
	}
	err = sc.Err()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return exec, fmt.Errorf("run code in sandbox %s: %w (%w)", s.ID, ErrTimeout, ctx.Err())
	}
	if ctx.Err() != nil {
		return exec, fmt.Errorf("run code in sandbox %s: %w", s.ID, ctx.Err())
	}
	if err == nil {
		err = ErrIncompleteExecution
	}
	return exec, fmt.Errorf("run code in sandbox %s: %w", s.ID, s.streamBroken(err))
}

// apply folds one NDJSON line into e; done is true at end_of_execution.
func (e *Execution) apply(line []byte, opts *RunCodeOptions) (done bool, err error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return false, nil
	}
	var head struct {
		Type           string `json:"type"`
		Text           string `json:"text"`
		Timestamp      string `json:"timestamp"`
		ExecutionCount int    `json:"execution_count"`
	}
	if err := json.Unmarshal(line, &head); err != nil {
		return false, fmt.Errorf("bad output line %.200q: %w", line, err)
	}
	switch head.Type {
	case "stdout", "stderr":
		ts, _ := time.Parse(time.RFC3339Nano, head.Timestamp)
		msg := OutputMessage{Line: head.Text, Timestamp: ts, Error: head.Type == "stderr"}
		if msg.Error {
			e.Logs.Stderr = append(e.Logs.Stderr, head.Text)
			if opts.OnStderr != nil {
				opts.OnStderr(msg)
			}
		} else {
			e.Logs.Stdout = append(e.Logs.Stdout, head.Text)
			if opts.OnStdout != nil {
				opts.OnStdout(msg)
			}
		}
	case "result":
		var r Result
		if err := json.Unmarshal(line, &r); err != nil {
			return false, fmt.Errorf("bad result line: %w", err)
		}
		e.Results = append(e.Results, r)
		if opts.OnResult != nil {
			opts.OnResult(r)
		}
	case "error":
		var x ExecutionError
		if err := json.Unmarshal(line, &x); err != nil {
			return false, fmt.Errorf("bad error line: %w", err)
		}
		e.Error = &x
		if opts.OnError != nil {
			opts.OnError(x)
		}
	case "number_of_executions":
		e.ExecutionCount = head.ExecutionCount
	case "end_of_execution":
		return true, nil
	}
	// keepalive and unknown types are ignored, as the E2B SDKs do.
	return false, nil
}

// CodeContext is an isolated interpreter state (one kernel).
type CodeContext struct {
	ID       string `json:"id"`
	Language string `json:"language"`
	Cwd      string `json:"cwd"`
}

// CodeContextOptions configure CreateCodeContext.
type CodeContextOptions struct {
	Language string // default python
	Cwd      string // default /home/user
	User     string // user the kernel runs as; default root, as in E2B
}

// CreateCodeContext starts a new context; pass its ID in
// RunCodeOptions.ContextID.
func (s *Sandbox) CreateCodeContext(ctx context.Context, opts *CodeContextOptions) (*CodeContext, error) {
	body := map[string]string{}
	if opts != nil {
		if opts.Language != "" {
			body["language"] = opts.Language
		}
		if opts.Cwd != "" {
			body["cwd"] = opts.Cwd
		}
		if opts.User != "" {
			body["user"] = opts.User
		}
	}
	var c CodeContext
	if err := s.codeJSON(ctx, http.MethodPost, "/contexts", body, &c); err != nil {
		return nil, fmt.Errorf("create code context: %w", err)
	}
	return &c, nil
}

// ListCodeContexts lists the sandbox's contexts.
func (s *Sandbox) ListCodeContexts(ctx context.Context) ([]CodeContext, error) {
	var cs []CodeContext
	if err := s.codeJSON(ctx, http.MethodGet, "/contexts", nil, &cs); err != nil {
		return nil, fmt.Errorf("list code contexts: %w", err)
	}
	return cs, nil
}

// RestartCodeContext restarts a context's kernel, clearing its state.
func (s *Sandbox) RestartCodeContext(ctx context.Context, id string) error {
	if err := s.codeJSON(ctx, http.MethodPost, "/contexts/"+id+"/restart", nil, nil); err != nil {
		return fmt.Errorf("restart code context %s: %w", id, err)
	}
	return nil
}

// RemoveCodeContext shuts a context down.
func (s *Sandbox) RemoveCodeContext(ctx context.Context, id string) error {
	if err := s.codeJSON(ctx, http.MethodDelete, "/contexts/"+id, nil, nil); err != nil {
		return fmt.Errorf("remove code context %s: %w", id, err)
	}
	return nil
}

func (s *Sandbox) codeRequest(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("invalid id in path %q", path)
	}
	req, err := s.newRequest(ctx, method, CodeInterpreterPort, path, "", rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		return nil, dataPlaneError(resp)
	}
	return resp, nil
}

func (s *Sandbox) codeJSON(ctx context.Context, method, path string, body, out any) error {
	resp, err := s.codeRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := readLimited(resp.Body, s.client.maxMessage)
	if err != nil {
		return err
	}
	if out == nil || len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	return json.Unmarshal(data, out)
}
