package sdk

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Pty runs interactive terminals in a sandbox (E2B's sandbox.pty): a login
// bash on a pseudo-terminal whose output arrives as raw bytes, escape
// sequences included.
type Pty struct{ sbx *Sandbox }

// PtyOptions configures a terminal.
type PtyOptions struct {
	// Cols and Rows are the terminal's size; zero means 80x24.
	Cols, Rows uint32
	// OnData receives the terminal's output as it arrives, from one
	// goroutine, in order. Required.
	OnData func(data []byte)
	// Envs are added to the shell's environment. TERM, LANG and LC_ALL
	// default to xterm-256color and C.UTF-8, as in the E2B SDKs.
	Envs map[string]string
	// Cwd is the working directory; empty means the user's home.
	Cwd string
	// User is the Linux user; empty means the sandbox default ("user").
	User string
	// Timeout bounds the terminal's life: envd kills it when it elapses.
	// Zero means no limit.
	Timeout time.Duration
}

// Create starts a terminal and returns once it runs. Send keystrokes with
// SendInput, change its size with Resize, end it with Kill (or by sending
// "exit\n"); the handle's Wait returns its exit code. Cancelling ctx after
// Create returns does not end the terminal.
func (p *Pty) Create(ctx context.Context, opts PtyOptions) (*CommandHandle, error) {
	if opts.OnData == nil {
		return nil, errors.New("create terminal: PtyOptions.OnData is required (the terminal's output goes nowhere else)")
	}
	if opts.Cols == 0 {
		opts.Cols = 80
	}
	if opts.Rows == 0 {
		opts.Rows = 24
	}
	envs := map[string]string{"TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
	for k, v := range opts.Envs {
		envs[k] = v
	}
	req := startRequest{
		Process: processConfig{Cmd: "/bin/bash", Args: []string{"-i", "-l"}, Envs: envs, Cwd: opts.Cwd},
		PTY:     &ptyConfig{Size: ptySize{Cols: opts.Cols, Rows: opts.Rows}},
	}
	cmds := &Commands{sbx: p.sbx}
	h, err := cmds.startWith(ctx, context.WithoutCancel(ctx), req, RunOptions{User: opts.User, Timeout: opts.Timeout}, opts.OnData)
	if err != nil {
		return nil, fmt.Errorf("create terminal: %w", err)
	}
	return h, nil
}

// Connect attaches to a running terminal (started by any client, e.g.
// before a reconnect) and sends its further output to onData.
func (p *Pty) Connect(ctx context.Context, pid uint32, onData func(data []byte)) (*CommandHandle, error) {
	if onData == nil {
		return nil, errors.New("connect to terminal: onData is required")
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	req := struct {
		Process processSelector `json:"process"`
	}{processSelector{pid}}
	cmds := &Commands{sbx: p.sbx}
	st, err := p.sbx.openStream(sctx, "process.Process/Connect", req, callOptions{})
	if err != nil {
		stop()
		cancel()
		return nil, fmt.Errorf("connect to terminal %d: %w", pid, err)
	}
	h, err := cmds.attachWith(st, cancel, RunOptions{}, onData)
	stop()
	if err != nil {
		return nil, fmt.Errorf("connect to terminal %d: %w", pid, err)
	}
	return h, nil
}

// SendInput writes data (keystrokes) to a terminal.
func (p *Pty) SendInput(ctx context.Context, pid uint32, data []byte) error {
	req := struct {
		Process processSelector `json:"process"`
		Input   struct {
			PTY []byte `json:"pty"`
		} `json:"input"`
	}{Process: processSelector{pid}}
	req.Input.PTY = data
	if err := p.sbx.unary(ctx, "process.Process/SendInput", req, nil, callOptions{}); err != nil {
		return fmt.Errorf("send input to terminal %d: %w", pid, err)
	}
	return nil
}

// Resize changes a terminal's size (the shell gets SIGWINCH).
func (p *Pty) Resize(ctx context.Context, pid uint32, cols, rows uint32) error {
	req := struct {
		Process processSelector `json:"process"`
		PTY     ptyConfig       `json:"pty"`
	}{processSelector{pid}, ptyConfig{Size: ptySize{Cols: cols, Rows: rows}}}
	if err := p.sbx.unary(ctx, "process.Process/Update", req, nil, callOptions{}); err != nil {
		return fmt.Errorf("resize terminal %d: %w", pid, err)
	}
	return nil
}

// Kill ends a terminal with SIGKILL.
func (p *Pty) Kill(ctx context.Context, pid uint32) error {
	return (&Commands{sbx: p.sbx}).Kill(ctx, pid)
}
