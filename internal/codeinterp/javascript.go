package codeinterp

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"syscall"
)

// jsRunner keeps one node process per JavaScript or TypeScript context,
// running driver/node_kernel.js: Debian has no JavaScript kernel for
// Jupyter, so that driver plays its part (ES modules, top-level await,
// TypeScript, state across cells; see the file).
type jsRunner struct {
	node, driver, cwd string
	env               []string
	user              *kernelUser
	typescript        bool
	replSession
}

type jsReply struct {
	ID    string   `json:"id"`
	Text  *string  `json:"text"`
	Error *jsError `json:"error"`
}

// jsError is an error raised by the code, as the error line shows it.
type jsError struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	Traceback string `json:"traceback"`
}

func startJSRunner(node, driver, cwd string, env []string, user *kernelUser, typescript bool) (*jsRunner, error) {
	r := &jsRunner{node: node, driver: driver, cwd: cwd, env: env, user: user, typescript: typescript}
	if err := r.init("node", r.start); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *jsRunner) start() (*replProc, error) {
	args := []string{r.driver}
	if r.typescript {
		args = append(args, "--typescript")
	}
	cmd := exec.Command(r.node, args...)
	cmd.Dir, cmd.Env = r.cwd, r.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.user.cred}
	rp, wp, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.ExtraFiles = []*os.File{wp} // fd 3: the driver's replies
	p, err := startRepl(cmd, "node", rp)
	if err != nil {
		rp.Close()
		wp.Close()
		return nil, err
	}
	wp.Close()
	return p, nil
}

func (r *jsRunner) Execute(ctx context.Context, code string, env map[string]string, out emitter) error {
	p, err := r.begin(out)
	if err != nil {
		return err
	}
	defer p.idle()
	id, marker := newMarker()
	req, _ := json.Marshal(map[string]any{"id": id, "code": code, "env": env, "marker": marker})
	if _, err := p.stdin.Write(append(req, '\n')); err != nil {
		return r.writeFailed(ctx, p, out)
	}
	var reply *jsReply
	_, died := p.wait(ctx, marker, out, func(line []byte) bool {
		var rep jsReply
		if json.Unmarshal(line, &rep) == nil && rep.ID == id {
			reply = &rep
		}
		return reply != nil
	})
	if died {
		p.flush(out)
		return r.died(ctx, p, out)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	switch {
	case reply.Error != nil:
		out.emit(lineError{Type: "error", Name: reply.Error.Name, Value: reply.Error.Value, Traceback: reply.Error.Traceback})
	case reply.Text != nil:
		out.emit(map[string]any{"type": "result", "is_main_result": true, "text": stripQuotes(*reply.Text)})
	}
	return nil
}
