package codeinterp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sbxdev/sbx/internal/codeinterp/jupyter"
)

// Python drivers: how a Python context runs its code.
const (
	// PythonRunner is our own process running IPython's InteractiveShell
	// (driver/py_runner.py), spoken to over pipes: what a kernel does for
	// a run, without ZMQ, message signing and ipykernel's threads. A
	// trivial run costs a fraction of the kernel's CPU.
	PythonRunner = "runner"
	// PythonKernel is the python3 Jupyter kernel (ipykernel).
	PythonKernel = "ipykernel"
)

// pyRunner keeps one py_runner.py process per Python context.
type pyRunner struct {
	python, driver, startup, cwd string
	env                          []string
	user                         *kernelUser
	replSession
	// kept are env vars set for good after the start (SetEnv, under
	// replSession.mu): a process started later (a restart, or after the
	// last one died) gets them in its environment.
	kept map[string]string
}

// pyFrame is one line the runner writes on fd 3 (see py_runner.py).
type pyFrame struct {
	T         string                     `json:"t"`
	ID        string                     `json:"id"`
	Name      string                     `json:"name"`
	Text      string                     `json:"text"`
	Data      map[string]json.RawMessage `json:"data"`
	EName     string                     `json:"ename"`
	EValue    string                     `json:"evalue"`
	Traceback []string                   `json:"traceback"`
	OK        bool                       `json:"ok"`
}

// pyStartTimeout bounds the runner's start-up (importing IPython and the
// start-up file), as StartTimeout bounds a kernel's.
const pyStartTimeout = 60 * time.Second

func startPyRunner(python, driver, startup, cwd string, env []string, user *kernelUser) (*pyRunner, error) {
	r := &pyRunner{python: python, driver: driver, startup: startup, cwd: cwd, env: env, user: user}
	if err := r.init("python", r.start); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *pyRunner) start() (*replProc, error) {
	args := []string{r.driver}
	if r.startup != "" {
		args = append(args, r.startup)
	}
	cmd := exec.Command(r.python, args...)
	cmd.Dir, cmd.Env = r.cwd, r.env
	if len(r.kept) > 0 {
		cmd.Env = slices.Clone(r.env)
		for k, v := range r.kept {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.user.cred}
	rp, wp, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.ExtraFiles = []*os.File{wp} // fd 3: the runner's frames
	p, err := startRepl(cmd, "python", rp)
	if err != nil {
		rp.Close()
		wp.Close()
		return nil, err
	}
	wp.Close()
	// Ready once IPython is imported and the start-up file ran, so the
	// first run does not pay for it (the server's health check means
	// "runCode is fast").
	var said strings.Builder
	timeout := time.NewTimer(pyStartTimeout)
	defer timeout.Stop()
	for {
		select {
		case line := <-p.side:
			var f pyFrame
			if json.Unmarshal(line, &f) == nil && f.T == "ready" {
				return p, nil
			}
		case c := <-p.chunks:
			if said.Len() < 4096 {
				said.Write(c.data)
			}
		case <-p.dead:
			p.release()
			for {
				select {
				case c := <-p.chunks:
					said.Write(c.data)
					continue
				default:
				}
				break
			}
			return nil, fmt.Errorf("start python runner (%s): exited: %s", r.python, lastLines(said.String(), 2048))
		case <-timeout.C:
			p.kill()
			return nil, fmt.Errorf("start python runner (%s): not ready after %s: %s", r.python, pyStartTimeout, lastLines(said.String(), 2048))
		}
	}
}

// ipykernelPython returns the interpreter of an ipykernel kernelspec
// ("python3 -m ipykernel_launcher -f ..."): the runner needs the same
// Python, with IPython. Other Python kernels keep their kernel.
func ipykernelPython(spec *jupyter.KernelSpec) (string, bool) {
	if len(spec.Argv) < 3 || spec.Argv[1] != "-m" || (spec.Argv[2] != "ipykernel_launcher" && spec.Argv[2] != "ipykernel") {
		return "", false
	}
	return spec.Argv[0], true
}

func lastLines(s string, max int) string {
	s = strings.TrimSpace(s)
	if len(s) > max {
		s = s[len(s)-max:]
	}
	return s
}

func (r *pyRunner) Execute(ctx context.Context, code string, env map[string]string, out emitter) error {
	p, count, err := r.beginCount(out)
	if err != nil {
		return err
	}
	defer p.idle()
	id, marker := newMarker()
	req, _ := json.Marshal(map[string]any{"op": "run", "id": id, "code": code, "count": count, "env": env, "marker": marker})
	if _, err := p.stdin.Write(append(req, '\n')); err != nil {
		return r.writeFailed(ctx, p, out)
	}
	_, died := p.wait(ctx, marker, out, func(line []byte) bool {
		var f pyFrame
		if err := json.Unmarshal(line, &f); err != nil {
			return false
		}
		switch f.T {
		case "stream":
			typ := "stdout"
			if f.Name == "stderr" {
				typ = "stderr"
			}
			out.emit(lineStream{Type: typ, Text: f.Text, Timestamp: timestamp("")})
		case "display":
			out.emit(resultLine(f.Data, false))
		case "result":
			out.emit(resultLine(f.Data, true))
		case "error":
			out.emit(errorLine(f.EName, f.EValue, f.Traceback))
		case "end":
			return f.ID == id
		}
		return false
	})
	if died {
		p.flush(out)
		return r.died(ctx, p, out)
	}
	return ctx.Err()
}

// call runs a request whose output nobody reads (setup code, env vars)
// and reports its failure.
func (r *pyRunner) call(ctx context.Context, op string, fields map[string]any) error {
	p, err := r.live()
	if err != nil {
		return err
	}
	defer p.idle()
	id, marker := newMarker()
	req := map[string]any{"op": op, "id": id, "marker": marker}
	for k, v := range fields {
		req[k] = v
	}
	b, _ := json.Marshal(req)
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		p.kill() // so the next request starts a new one (see writeFailed)
		return fmt.Errorf("python runner: %w", err)
	}
	var end *pyFrame
	_, died := p.wait(ctx, marker, discard{}, func(line []byte) bool {
		var f pyFrame
		if json.Unmarshal(line, &f) == nil && f.T == "end" && f.ID == id {
			end = &f
		}
		return end != nil
	})
	switch {
	case died:
		return errors.New("python runner exited")
	case end == nil:
		return ctx.Err()
	case !end.OK:
		return fmt.Errorf("%s: %s", end.EName, end.EValue)
	}
	return nil
}

// silentRun runs setup code (preloading modules) outside the history and
// the execution count.
func (r *pyRunner) silentRun(ctx context.Context, code string) error {
	return r.call(ctx, "silent", map[string]any{"code": code})
}

// SetEnv sets the sandbox's env vars in the runner for good.
func (r *pyRunner) SetEnv(ctx context.Context, env map[string]string) error {
	r.mu.Lock()
	r.kept = maps.Clone(env)
	r.mu.Unlock()
	return r.call(ctx, "env", map[string]any{"env": env})
}

// discard is an emitter for output nobody reads.
type discard struct{}

func (discard) emit(any) {}

// silentRunner runs setup code in a context (the Python runners).
type silentRunner interface {
	silentRun(ctx context.Context, code string) error
}

var (
	_ silentRunner = (*pyRunner)(nil)
	_ silentRunner = (*kernelRunner)(nil)
	_ envSetter    = (*pyRunner)(nil)
)
