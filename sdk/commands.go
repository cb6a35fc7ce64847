package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Commands runs processes in a sandbox through envd's process service.
type Commands struct{ sbx *Sandbox }

// RunOptions configures a command.
type RunOptions struct {
	// Envs are added to the process environment (only for this process).
	Envs map[string]string
	// Cwd is the working directory; empty means the user's home.
	Cwd string
	// User is the Linux user; empty means the sandbox default ("user").
	User string
	// Stdin keeps the process's stdin open for SendStdin; otherwise the
	// process reads EOF.
	Stdin bool
	// Timeout bounds the process's life: envd kills it when it elapses.
	// Zero means no limit (bound the wait with ctx instead).
	Timeout time.Duration
	// OnStdout and OnStderr receive output as it arrives, from one
	// goroutine, in order. They must not block for long.
	OnStdout func(chunk string)
	OnStderr func(chunk string)
	// Tag names the process so it can be found in List.
	Tag string
	// OutputLimit, when > 0, keeps only the last OutputLimit bytes of
	// stdout and of stderr in the handle and the result (OnStdout and
	// OnStderr still see everything); 0 keeps all of it. A command that
	// prints without end needs a limit.
	OutputLimit int
}

// CommandResult is the outcome of a finished command.
type CommandResult struct {
	Stdout   string
	Stderr   string
	ExitCode int
	// Error is envd's description of a failure to run or wait for the
	// process (empty normally); a non-zero exit alone does not set it.
	Error string
}

// CommandExitError is returned (wrapped) by Run and Wait when the command
// exits with a non-zero code; the result is still complete.
type CommandExitError struct{ *CommandResult }

func (e *CommandExitError) Error() string {
	msg := fmt.Sprintf("command exited with code %d", e.ExitCode)
	if e.CommandResult.Error != "" {
		msg += ": " + e.CommandResult.Error
	}
	if s := strings.TrimSpace(e.Stderr); s != "" {
		if len(s) > 200 {
			s = s[:200] + "..."
		}
		msg += ": " + s
	}
	return msg
}

// Run runs cmd with `/bin/bash -l -c cmd` and waits for it. A non-zero exit
// returns the result and a *CommandExitError (check with errors.As); other
// errors return a nil result.
func (c *Commands) Run(ctx context.Context, cmd string, opts RunOptions) (*CommandResult, error) {
	h, err := c.start(ctx, ctx, cmd, opts)
	if err != nil {
		return nil, err
	}
	return h.Wait(ctx)
}

// Start runs cmd in the background and returns once the process has
// started. The handle collects output until Wait; cancelling ctx after Start
// returns does not stop the process (use Kill).
func (c *Commands) Start(ctx context.Context, cmd string, opts RunOptions) (*CommandHandle, error) {
	return c.start(ctx, context.WithoutCancel(ctx), cmd, opts)
}

// processConfig and the other types below are envd's process.proto messages
// in ProtoJSON form.
type processConfig struct {
	Cmd  string            `json:"cmd"`
	Args []string          `json:"args,omitempty"`
	Envs map[string]string `json:"envs,omitempty"`
	Cwd  string            `json:"cwd,omitempty"`
}

type processSelector struct {
	PID uint32 `json:"pid"`
}

type processEvent struct {
	Event struct {
		Start *struct {
			PID uint32 `json:"pid"`
		} `json:"start"`
		Data *struct {
			Stdout []byte `json:"stdout"`
			Stderr []byte `json:"stderr"`
			PTY    []byte `json:"pty"`
		} `json:"data"`
		End *struct {
			ExitCode int    `json:"exitCode"`
			Exited   bool   `json:"exited"`
			Status   string `json:"status"`
			Error    string `json:"error"`
		} `json:"end"`
		Keepalive *struct{} `json:"keepalive"`
	} `json:"event"`
}

// start opens the Start stream with openCtx and keeps reading it under
// streamCtx, which for background commands outlives the caller's context.
func (c *Commands) start(openCtx, streamCtx context.Context, cmd string, opts RunOptions) (*CommandHandle, error) {
	req := startRequest{
		Process: processConfig{Cmd: "/bin/bash", Args: []string{"-l", "-c", cmd}, Envs: opts.Envs, Cwd: opts.Cwd},
		Tag:     opts.Tag,
		Stdin:   opts.Stdin,
	}
	h, err := c.startWith(openCtx, streamCtx, req, opts, nil)
	if err != nil {
		return nil, fmt.Errorf("run %q: %w", cmd, err)
	}
	return h, nil
}

// startRequest is envd's StartRequest; PTY set starts a terminal.
type startRequest struct {
	Process processConfig `json:"process"`
	PTY     *ptyConfig    `json:"pty,omitempty"`
	Tag     string        `json:"tag,omitempty"`
	Stdin   bool          `json:"stdin"`
}

type ptyConfig struct {
	Size ptySize `json:"size"`
}

type ptySize struct {
	Cols uint32 `json:"cols"`
	Rows uint32 `json:"rows"`
}

// startWith opens the Start stream; onPty receives a terminal's output.
func (c *Commands) startWith(openCtx, streamCtx context.Context, req startRequest, opts RunOptions, onPty func([]byte)) (*CommandHandle, error) {
	sctx, cancel := context.WithCancel(streamCtx)
	// The stream must not die with openCtx once started, but opening it
	// must still honour openCtx's cancellation.
	stop := context.AfterFunc(openCtx, cancel)
	st, err := c.sbx.openStream(sctx, "process.Process/Start", req, callOptions{user: opts.User, timeout: opts.Timeout})
	if err != nil {
		stop()
		cancel()
		return nil, err
	}
	h, err := c.attachWith(st, cancel, opts, onPty)
	stop()
	return h, err
}

// attach waits for the start event and then reads the rest of the stream in
// a goroutine.
func (c *Commands) attach(st *serverStream, cancel context.CancelFunc, opts RunOptions) (*CommandHandle, error) {
	return c.attachWith(st, cancel, opts, nil)
}

func (c *Commands) attachWith(st *serverStream, cancel context.CancelFunc, opts RunOptions, onPty func([]byte)) (*CommandHandle, error) {
	fail := func(err error) (*CommandHandle, error) {
		st.Close()
		cancel()
		return nil, err
	}
	msg, err := st.next()
	switch {
	case errors.Is(err, io.EOF):
		return fail(errors.New("stream ended before the process started"))
	case isRPCError(err):
		return fail(err)
	case err != nil:
		return fail(c.sbx.streamBroken(err))
	}
	var ev processEvent
	if err := json.Unmarshal(msg, &ev); err != nil {
		return fail(fmt.Errorf("decode process event %s: %w", msg, err))
	}
	if ev.Event.Start == nil {
		return fail(fmt.Errorf("expected a start event first, got %s", msg))
	}
	h := &CommandHandle{PID: ev.Event.Start.PID, cmds: c, cancel: cancel, done: make(chan struct{}), limit: opts.OutputLimit}
	h.onPty = onPty
	go h.read(st, opts.OnStdout, opts.OnStderr)
	return h, nil
}

func isRPCError(err error) bool {
	var re *RPCError
	return errors.As(err, &re)
}

// CommandHandle is a started process: wait for it, feed its stdin, kill it.
type CommandHandle struct {
	PID uint32

	cmds   *Commands
	cancel context.CancelFunc
	done   chan struct{}
	onPty  func([]byte) // a terminal's output (Pty.Create)

	mu     sync.Mutex
	limit  int // RunOptions.OutputLimit
	stdout []byte
	stderr []byte
	result *CommandResult
	err    error
}

// keep appends data to buf and, with a limit, drops what is older than
// the last limit bytes.
func keep(buf, data []byte, limit int) []byte {
	buf = append(buf, data...)
	if limit > 0 && len(buf) > limit {
		// Copy down rather than reslice, or buf's array would keep all of
		// the output it ever held.
		n := copy(buf, buf[len(buf)-limit:])
		buf = buf[:n]
	}
	return buf
}

func (h *CommandHandle) read(st *serverStream, onStdout, onStderr func(string)) {
	defer close(h.done)
	defer h.cancel()
	defer st.Close()
	for {
		msg, err := st.next()
		if err != nil {
			h.finish(nil, err)
			return
		}
		var ev processEvent
		if err := json.Unmarshal(msg, &ev); err != nil {
			h.finish(nil, fmt.Errorf("decode process event %s: %w", msg, err))
			return
		}
		switch e := ev.Event; {
		case e.Data != nil:
			h.mu.Lock()
			h.stdout = keep(h.stdout, e.Data.Stdout, h.limit)
			h.stderr = keep(h.stderr, e.Data.Stderr, h.limit)
			h.mu.Unlock()
			if len(e.Data.Stdout) > 0 && onStdout != nil {
				onStdout(string(e.Data.Stdout))
			}
			if len(e.Data.Stderr) > 0 && onStderr != nil {
				onStderr(string(e.Data.Stderr))
			}
			if len(e.Data.PTY) > 0 && h.onPty != nil {
				h.onPty(e.Data.PTY)
			}
		case e.End != nil:
			h.mu.Lock()
			res := &CommandResult{Stdout: string(h.stdout), Stderr: string(h.stderr), ExitCode: e.End.ExitCode, Error: e.End.Error}
			h.mu.Unlock()
			// Drain to the end-of-stream envelope so a trailing error
			// is not lost; the result stands either way.
			for {
				if _, err := st.next(); err != nil {
					break
				}
			}
			h.finish(res, nil)
			return
		}
	}
}

func (h *CommandHandle) finish(res *CommandResult, err error) {
	if res == nil && err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("process stream ended without an exit event")
		} else if !isRPCError(err) && !errors.Is(err, context.Canceled) {
			err = h.cmds.sbx.streamBroken(err)
		}
	}
	h.mu.Lock()
	h.result, h.err = res, err
	h.mu.Unlock()
}

// Wait waits for the process to exit. It returns the result and, for a
// non-zero exit, a *CommandExitError. If ctx ends first, the process keeps
// running and Wait can be called again.
func (h *CommandHandle) Wait(ctx context.Context) (*CommandResult, error) {
	select {
	case <-h.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for process %d: %w", h.PID, ctx.Err())
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return nil, fmt.Errorf("process %d: %w", h.PID, h.err)
	}
	if h.result.ExitCode != 0 {
		return h.result, &CommandExitError{h.result}
	}
	return h.result, nil
}

// Stdout returns the output received so far.
func (h *CommandHandle) Stdout() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return string(h.stdout)
}

// Stderr returns the error output received so far.
func (h *CommandHandle) Stderr() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return string(h.stderr)
}

// Kill sends SIGKILL to the process.
func (h *CommandHandle) Kill(ctx context.Context) error { return h.cmds.Kill(ctx, h.PID) }

// SendStdin writes data to the process's stdin (start it with Stdin: true).
func (h *CommandHandle) SendStdin(ctx context.Context, data string) error {
	return h.cmds.SendStdin(ctx, h.PID, data)
}

// CloseStdin closes the process's stdin so it reads EOF.
func (h *CommandHandle) CloseStdin(ctx context.Context) error {
	return h.cmds.CloseStdin(ctx, h.PID)
}

// Disconnect stops receiving output; the process keeps running.
func (h *CommandHandle) Disconnect() { h.cancel() }

// ProcessInfo describes a running process.
type ProcessInfo struct {
	PID  uint32
	Tag  string
	Cmd  string
	Args []string
	Envs map[string]string
	Cwd  string
}

// List returns the processes envd started that are still running.
func (c *Commands) List(ctx context.Context) ([]ProcessInfo, error) {
	var resp struct {
		Processes []struct {
			Config processConfig `json:"config"`
			PID    uint32        `json:"pid"`
			Tag    string        `json:"tag"`
		} `json:"processes"`
	}
	if err := c.sbx.unary(ctx, "process.Process/List", struct{}{}, &resp, callOptions{}); err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	out := make([]ProcessInfo, 0, len(resp.Processes))
	for _, p := range resp.Processes {
		out = append(out, ProcessInfo{PID: p.PID, Tag: p.Tag, Cmd: p.Config.Cmd, Args: p.Config.Args, Envs: p.Config.Envs, Cwd: p.Config.Cwd})
	}
	return out, nil
}

// Connect attaches to a running process started earlier (by any client)
// and streams its remaining output into a new handle.
func (c *Commands) Connect(ctx context.Context, pid uint32, opts RunOptions) (*CommandHandle, error) {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	req := struct {
		Process processSelector `json:"process"`
	}{processSelector{pid}}
	st, err := c.sbx.openStream(sctx, "process.Process/Connect", req, callOptions{timeout: opts.Timeout})
	if err != nil {
		stop()
		cancel()
		return nil, fmt.Errorf("connect to process %d: %w", pid, err)
	}
	h, err := c.attach(st, cancel, opts)
	stop()
	if err != nil {
		return nil, fmt.Errorf("connect to process %d: %w", pid, err)
	}
	return h, nil
}

// Kill sends SIGKILL to a process; IsNotFound(err) is true if there is no
// such process.
func (c *Commands) Kill(ctx context.Context, pid uint32) error {
	req := struct {
		Process processSelector `json:"process"`
		Signal  string          `json:"signal"`
	}{processSelector{pid}, "SIGNAL_SIGKILL"}
	if err := c.sbx.unary(ctx, "process.Process/SendSignal", req, nil, callOptions{}); err != nil {
		return fmt.Errorf("kill process %d: %w", pid, err)
	}
	return nil
}

// SendStdin writes data to a process's stdin.
func (c *Commands) SendStdin(ctx context.Context, pid uint32, data string) error {
	req := struct {
		Process processSelector `json:"process"`
		Input   struct {
			Stdin []byte `json:"stdin"`
		} `json:"input"`
	}{Process: processSelector{pid}}
	req.Input.Stdin = []byte(data)
	if err := c.sbx.unary(ctx, "process.Process/SendInput", req, nil, callOptions{}); err != nil {
		return fmt.Errorf("send stdin to process %d: %w", pid, err)
	}
	return nil
}

// CloseStdin closes a process's stdin.
func (c *Commands) CloseStdin(ctx context.Context, pid uint32) error {
	req := struct {
		Process processSelector `json:"process"`
	}{processSelector{pid}}
	if err := c.sbx.unary(ctx, "process.Process/CloseStdin", req, nil, callOptions{}); err != nil {
		return fmt.Errorf("close stdin of process %d: %w", pid, err)
	}
	return nil
}
