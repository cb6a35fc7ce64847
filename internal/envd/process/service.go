package process

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"syscall"

	"github.com/creack/pty"

	"github.com/sbxdev/sbx/internal/envd/connect"
	"github.com/sbxdev/sbx/internal/envd/users"
)

// Session is what the service needs from envd's per-sandbox state.
type Session interface {
	// User is the user a request acts as (Basic auth, else the default);
	// an unknown name is a connect.Unauthenticated error.
	User(r *http.Request) (*users.User, error)
	// Vars are the sandbox-wide environment variables.
	Vars() map[string]string
	// Workdir is the default working directory, "" for the user's home.
	Workdir() string
}

// defaultPath is used unless the sandbox env sets PATH.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Service serves process.Process.
type Service struct {
	m    *Manager
	sess Session
}

// NewService binds a manager to a session.
func NewService(m *Manager, sess Session) *Service { return &Service{m: m, sess: sess} }

// Register adds the service's routes to mux.
func (s *Service) Register(mux interface{ Handle(string, http.Handler) }) {
	const p = "/process.Process/"
	mux.Handle(p+"Start", connect.ServerStream(s.startStream))
	mux.Handle(p+"Connect", connect.ServerStream(s.connectStream))
	mux.Handle(p+"List", connect.Unary(s.list))
	mux.Handle(p+"SendInput", connect.Unary(s.sendInput))
	mux.Handle(p+"SendSignal", connect.Unary(s.sendSignal))
	mux.Handle(p+"CloseStdin", connect.Unary(s.closeStdin))
	mux.Handle(p+"Update", connect.Unary(s.update))
	mux.Handle(p+"StreamInput", http.HandlerFunc(s.streamInput))
}

// Spec builds the start spec for a request: user, environment and cwd.
func (s *Service) Spec(r *http.Request, req *startRequest) (Spec, error) {
	if req.Process.Cmd == "" {
		return Spec{}, connect.Errorf(connect.InvalidArgument, "process.cmd is empty: give the program to run, e.g. /bin/bash")
	}
	u, err := s.sess.User(r)
	if err != nil {
		return Spec{}, err
	}
	timeout, err := connect.Timeout(r)
	if err != nil {
		return Spec{}, err
	}
	spec := Spec{Config: req.Process, Tag: req.Tag, User: u, Stdin: req.Stdin == nil || *req.Stdin, Timeout: timeout}
	if req.PTY != nil {
		spec.PTY = &PTYSize{Cols: 80, Rows: 24}
		if req.PTY.Size != nil && req.PTY.Size.Cols > 0 && req.PTY.Size.Rows > 0 {
			spec.PTY = req.PTY.Size
		}
	}
	switch {
	case req.Process.Cwd != nil && *req.Process.Cwd != "":
		spec.Dir = u.Resolve(*req.Process.Cwd)
	case s.sess.Workdir() != "":
		spec.Dir = s.sess.Workdir()
	default:
		spec.Dir = u.Home
	}
	spec.Env = environ(u, s.sess.Vars(), req.Process.Envs)
	return spec, nil
}

// environ layers user identity, sandbox-wide vars and per-process vars;
// later layers win.
func environ(u *users.User, sandbox, process map[string]string) []string {
	env := map[string]string{"PATH": defaultPath, "HOME": u.Home, "USER": u.Name, "LOGNAME": u.Name}
	for k, v := range sandbox {
		env[k] = v
	}
	for k, v := range process {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out) // deterministic for tests and /proc/<pid>/environ readers
	return out
}

func (s *Service) startStream(ctx context.Context, r *http.Request, req *startRequest, st *connect.Stream) error {
	spec, err := s.Spec(r, req)
	if err != nil {
		return err
	}
	p, sub, err := s.m.start(spec)
	if err != nil {
		return err
	}
	return follow(ctx, p, sub, st)
}

func (s *Service) connectStream(ctx context.Context, r *http.Request, req *connectRequest, st *connect.Stream) error {
	p, err := s.m.find(req.Process)
	if err != nil {
		return err
	}
	return follow(ctx, p, p.subscribe(), st)
}

func (s *Service) list(ctx context.Context, r *http.Request, req *listRequest) (*listResponse, error) {
	return &listResponse{Processes: s.m.List()}, nil
}

func (s *Service) sendInput(ctx context.Context, r *http.Request, req *sendInputRequest) (*empty, error) {
	p, err := s.m.findRunning(req.Process)
	if err != nil {
		return nil, err
	}
	return &empty{}, p.input(req.Input)
}

func (p *proc) input(in Input) error {
	switch {
	case in.PTY != nil && p.pty == nil:
		return connect.Errorf(connect.FailedPrecondition, "process %d has no PTY: send input.stdin instead", p.pid)
	case p.pty != nil:
		data := in.PTY
		if data == nil {
			data = in.Stdin
		}
		if _, err := p.pty.Write(data); err != nil {
			return fmt.Errorf("write to pty of %d: %w", p.pid, err)
		}
	default:
		if err := p.writeStdin(in.Stdin); err != nil {
			if errors.Is(err, errStdinClosed) {
				return connect.Errorf(connect.FailedPrecondition, "process %d: %v", p.pid, err)
			}
			return fmt.Errorf("write to stdin of %d: %w", p.pid, err)
		}
	}
	return nil
}

func (s *Service) sendSignal(ctx context.Context, r *http.Request, req *sendSignalRequest) (*empty, error) {
	p, err := s.m.findRunning(req.Process)
	if err != nil {
		return nil, err
	}
	if req.Signal == 0 {
		return nil, connect.Errorf(connect.InvalidArgument, "signal is unspecified: use SIGNAL_SIGTERM or SIGNAL_SIGKILL")
	}
	if err := p.signal(syscall.Signal(req.Signal)); err != nil {
		return nil, fmt.Errorf("signal %d: %w", p.pid, err)
	}
	return &empty{}, nil
}

func (s *Service) closeStdin(ctx context.Context, r *http.Request, req *closeStdinRequest) (*empty, error) {
	p, err := s.m.findRunning(req.Process)
	if err != nil {
		return nil, err
	}
	if p.pty != nil {
		return nil, connect.Errorf(connect.FailedPrecondition, "process %d uses a PTY; send Ctrl-D (\\x04) as pty input instead", p.pid)
	}
	p.closeStdin()
	return &empty{}, nil
}

func (s *Service) update(ctx context.Context, r *http.Request, req *updateRequest) (*empty, error) {
	p, err := s.m.findRunning(req.Process)
	if err != nil {
		return nil, err
	}
	if req.PTY == nil || req.PTY.Size == nil {
		return &empty{}, nil
	}
	if p.pty == nil {
		return nil, connect.Errorf(connect.FailedPrecondition, "process %d has no PTY to resize", p.pid)
	}
	if err := pty.Setsize(p.pty, &pty.Winsize{Cols: uint16(req.PTY.Size.Cols), Rows: uint16(req.PTY.Size.Rows)}); err != nil {
		return nil, fmt.Errorf("resize pty of %d: %w", p.pid, err)
	}
	return &empty{}, nil
}

// streamInput is the client-streaming StreamInput method; the SDKs do not
// use it, but it is cheap to serve: read envelopes until the body ends.
func (s *Service) streamInput(w http.ResponseWriter, r *http.Request) {
	h := connect.ClientStream(func(ctx context.Context, r *http.Request, next func(*streamInputRequest) (bool, error)) (*empty, error) {
		var p *proc
		for {
			var msg streamInputRequest
			ok, err := next(&msg)
			if err != nil || !ok {
				return &empty{}, err
			}
			switch {
			case msg.Start != nil:
				if p, err = s.m.findRunning(msg.Start.Process); err != nil {
					return nil, err
				}
			case msg.Data != nil:
				if p == nil {
					return nil, connect.Errorf(connect.FailedPrecondition, "send a start message with the process selector before data")
				}
				if err := p.input(msg.Data.Input); err != nil {
					return nil, err
				}
			}
		}
	})
	h.ServeHTTP(w, r)
}
