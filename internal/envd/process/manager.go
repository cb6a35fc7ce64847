// Package process implements E2B's process.Process Connect service: it
// starts processes as the requested user, streams their output to any
// number of subscribers and remembers recent exits.
package process

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"

	"github.com/sbxdev/sbx/internal/envd/connect"
	"github.com/sbxdev/sbx/internal/envd/users"
)

// keepExited is how many finished processes Connect can still replay.
const keepExited = 256

// Spec is everything needed to start one process.
type Spec struct {
	Config  Config
	Tag     *string
	PTY     *PTYSize // nil: pipes
	Stdin   bool
	User    *users.User
	Env     []string // complete environment, KEY=VALUE
	Dir     string
	Timeout time.Duration // kill after; 0 = never
}

// Manager owns the processes started through envd.
type Manager struct {
	log *slog.Logger

	mu      sync.Mutex
	procs   map[uint32]*proc // running and recently exited
	exited  []uint32         // FIFO of exited pids still in procs
	running int

	children *children // the processes started here that the manager waits for
}

// NewManager returns an empty process table.
func NewManager(log *slog.Logger) *Manager {
	return &Manager{log: log, procs: make(map[uint32]*proc), children: newChildren()}
}

// ReapOrphans waits for the exited children of this process that the
// manager did not start: run on SIGCHLD when envd is the sandbox's init
// (or a subreaper) and orphans are re-parented to it. It returns how many
// it reaped.
func (m *Manager) ReapOrphans() int { return m.children.reap() }

// start launches spec and subscribes sub (if non-nil) before any output
// can be produced, so the first subscriber never misses bytes.
func (m *Manager) start(spec Spec) (*proc, *subscriber, error) {
	cmd := exec.Command(spec.Config.Cmd, spec.Config.Args...)
	if !strings.Contains(spec.Config.Cmd, "/") {
		// Search the process's PATH, not envd's own.
		path, err := lookPath(spec.Config.Cmd, spec.Env)
		if err != nil {
			return nil, nil, startError(spec, err)
		}
		cmd.Path, cmd.Err = path, nil
	}
	cmd.Env = spec.Env
	cmd.Dir = spec.Dir
	attr := &syscall.SysProcAttr{Credential: spec.User.Credential()}
	cmd.SysProcAttr = attr
	p := &proc{config: spec.Config, tag: spec.Tag, cmd: cmd, subs: make(map[*subscriber]struct{}), done: make(chan struct{})}
	sub := p.subscribe()

	// No reaping between the fork and the child's record (children).
	forked := m.children.forking()
	defer forked()

	var childEnds []*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			_ = f.Close()
		}
	}
	var wrappers []func([]byte) *DataEvent
	if spec.PTY != nil {
		master, tty, err := pty.Open()
		if err != nil {
			return nil, nil, fmt.Errorf("open pty: %w", err)
		}
		// The terminal belongs to its user, as after a login: tools such
		// as mesg, script or sudo check that.
		if c := spec.User.Credential(); c != nil {
			_ = tty.Chown(int(c.Uid), int(c.Gid))
		}
		if err := pty.Setsize(master, &pty.Winsize{Cols: uint16(spec.PTY.Cols), Rows: uint16(spec.PTY.Rows)}); err != nil {
			closeAll([]*os.File{master, tty})
			return nil, nil, fmt.Errorf("size pty: %w", err)
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
		attr.Setsid, attr.Setctty = true, true // controlling terminal = fd 0
		err = cmd.Start()
		_ = tty.Close()
		if err != nil {
			_ = master.Close()
			return nil, nil, startError(spec, err)
		}
		p.pty = master
		p.outs = []*os.File{master}
		wrappers = append(wrappers, func(b []byte) *DataEvent { return &DataEvent{PTY: b} })
	} else {
		attr.Setpgid = true
		outR, outW, err := os.Pipe()
		if err != nil {
			return nil, nil, fmt.Errorf("stdout pipe: %w", err)
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			closeAll([]*os.File{outR, outW})
			return nil, nil, fmt.Errorf("stderr pipe: %w", err)
		}
		cmd.Stdout, cmd.Stderr = outW, errW
		childEnds = append(childEnds, outW, errW)
		p.outs = []*os.File{outR, errR}
		if spec.Stdin {
			inR, inW, err := os.Pipe()
			if err != nil {
				closeAll(append(childEnds, p.outs...))
				return nil, nil, fmt.Errorf("stdin pipe: %w", err)
			}
			cmd.Stdin = inR
			childEnds = append(childEnds, inR)
			p.stdin = inW
		}
		wrappers = append(wrappers,
			func(b []byte) *DataEvent { return &DataEvent{Stdout: b} },
			func(b []byte) *DataEvent { return &DataEvent{Stderr: b} })
		if err := cmd.Start(); err != nil {
			closeAll(append(childEnds, p.outs...))
			p.closeStdin()
			return nil, nil, startError(spec, err)
		}
		closeAll(childEnds)
	}
	p.pid = uint32(cmd.Process.Pid)
	m.children.add(cmd.Process.Pid)

	m.mu.Lock()
	m.procs[p.pid] = p
	m.running++
	m.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(len(p.outs))
	for i, f := range p.outs {
		go p.pump(f, wrappers[i], &wg)
	}
	if spec.Timeout > 0 {
		t := time.AfterFunc(spec.Timeout, func() { _ = p.signal(syscall.SIGKILL) })
		go func() { <-p.done; t.Stop() }()
	}
	go p.wait(&wg, func() { m.children.waited(int(p.pid)) }, func() { m.exitedProc(p) })
	m.log.Debug("process started", "pid", p.pid, "cmd", spec.Config.Cmd, "user", spec.User.Name)
	return p, sub, nil
}

// lookPath finds an executable named file in the PATH of env.
func lookPath(file string, env []string) (string, error) {
	path := defaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("executable %q not found in PATH %s", file, path)
}

func startError(spec Spec, err error) error {
	// A missing binary or cwd is the caller's mistake, not envd's.
	return connect.Errorf(connect.InvalidArgument, "start %q as %s in %s: %v", spec.Config.Cmd, spec.User.Name, spec.Dir, err)
}

func (m *Manager) exitedProc(p *proc) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.running--
	m.exited = append(m.exited, p.pid)
	if len(m.exited) > keepExited {
		old := m.exited[0]
		m.exited = m.exited[1:]
		// The pid may have been reused by a newer process.
		if q, ok := m.procs[old]; ok && q.isDone() {
			delete(m.procs, old)
		}
	}
}

func (p *proc) isDone() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// find resolves a selector to a process, running or recently exited.
func (m *Manager) find(sel Selector) (*proc, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case sel.PID != nil:
		if p, ok := m.procs[*sel.PID]; ok {
			return p, nil
		}
	case sel.Tag != nil:
		var best *proc
		for _, p := range m.procs {
			if p.tag != nil && *p.tag == *sel.Tag && (best == nil || !p.isDone()) {
				best = p
			}
		}
		if best != nil {
			return best, nil
		}
	}
	return nil, notFound(sel)
}

// findRunning is find for operations that need a live process.
func (m *Manager) findRunning(sel Selector) (*proc, error) {
	p, err := m.find(sel)
	if err != nil {
		return nil, err
	}
	if p.isDone() {
		return nil, notFound(sel)
	}
	return p, nil
}

// List returns the running processes ordered by pid.
func (m *Manager) List() []Info {
	m.mu.Lock()
	out := make([]Info, 0, m.running)
	for _, p := range m.procs {
		if !p.isDone() {
			out = append(out, p.info())
		}
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out
}

// Close kills every running process; used at shutdown.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.procs {
		if !p.isDone() {
			_ = p.signal(syscall.SIGKILL)
		}
	}
}

// follow streams a process's events to send: start, data, keepalives and
// end. It returns when the process ended or ctx is done. An event is
// flushed unless another is ready to follow it; the last ones leave with
// the stream's end (connect.ServerStream), so a short command's output,
// end event and end of stream reach the client in one write.
func follow(ctx context.Context, p *proc, sub *subscriber, s *connect.Stream) error {
	defer p.unsubscribe(sub)
	if err := s.Send(eventResponse{Event: Event{Start: &StartEvent{PID: p.pid}}}); err != nil {
		return err
	}
	for {
		select {
		case ev := <-sub.ch:
			if err := s.Queue(eventResponse{Event: Event{Data: ev}}); err != nil {
				return err
			}
			// Nothing is held back while this waits: it flushes unless
			// more output or the end is already there.
			if len(sub.ch) == 0 && !p.isDone() {
				if err := s.Flush(); err != nil {
					return err
				}
			}
		case <-p.done:
			// Pumps finished before done was closed, so whatever they
			// sent is already buffered here.
			for {
				select {
				case ev := <-sub.ch:
					if err := s.Queue(eventResponse{Event: Event{Data: ev}}); err != nil {
						return err
					}
					continue
				default:
				}
				break
			}
			p.mu.Lock()
			end := p.end
			p.mu.Unlock()
			return s.Queue(eventResponse{Event: Event{End: end}})
		case <-s.Keepalive():
			if err := s.Send(eventResponse{Event: Event{Keepalive: &struct{}{}}}); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
