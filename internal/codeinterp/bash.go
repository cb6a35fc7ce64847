package codeinterp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// bashRunner keeps one bash process per context, so variables, functions
// and the working directory persist between runs like in a kernel. Debian
// has no bash_kernel package, and a shell needs no protocol: each run
// sources a file with the code and then prints a random end marker (with
// the exit status) on stdout and stderr.
type bashRunner struct {
	cwd  string
	env  []string
	user *kernelUser
	replSession
}

func startBashRunner(cwd string, env []string, user *kernelUser) (*bashRunner, error) {
	r := &bashRunner{cwd: cwd, env: env, user: user}
	if err := r.init("bash", r.start); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *bashRunner) start() (*replProc, error) {
	dir, err := os.MkdirTemp("", "sbx-bash-")
	if err != nil {
		return nil, err
	}
	// A shell running as another user reads its cells from dir, which
	// stays ours, so that user cannot turn cell.sh into a link we write
	// through.
	if r.user.cred != nil {
		if err := os.Chmod(dir, 0o755); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	cmd := exec.Command("bash", "--noprofile", "--norc")
	cmd.Dir = r.cwd
	cmd.Env = r.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.user.cred}
	// Own process group (startRepl) so an interrupt reaches the running
	// command; the trap keeps the shell itself (and its state) alive
	// through SIGINT.
	p, err := startRepl(cmd, "bash", nil)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p.dir = dir
	// Copies of stdout and stderr at fds no cell uses, from which each
	// run's end restores them: a cell's `exec >log 2>&1` changed the
	// shell's own descriptors for good, so the end markers went into the
	// file and the run never ended. (A cell's `exec 0<file` is safe: bash
	// moves the stream it reads commands from out of the way itself, and
	// restoring fd 0 here crashed bash.)
	if _, err := io.WriteString(p.stdin, "trap : INT; exec 251>&1 252>&2\n"); err != nil {
		p.kill() // reaps it and removes dir
		return nil, fmt.Errorf("start bash: %w", err)
	}
	return p, nil
}

var envNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func (r *bashRunner) Execute(ctx context.Context, code string, env map[string]string, out emitter) error {
	p, err := r.begin(out)
	if err != nil {
		return err
	}
	defer p.idle()
	_, marker := newMarker()
	cell := filepath.Join(p.dir, "cell.sh")
	if err := os.WriteFile(cell, []byte(code), 0o644); err != nil {
		out.emit(errorLine("ExecutionError", err.Error(), nil))
		return err
	}
	var script strings.Builder
	set, restore, err := bashEnv(env)
	if err != nil {
		out.emit(errorLine("EnvVarsError", err.Error(), nil))
		return nil
	}
	script.WriteString(set)
	// stdin from /dev/null: user commands must not eat our command stream.
	// While the cell runs, SIGINT makes `.` return, which aborts the rest of
	// the cell like Ctrl-C at a prompt; the shell itself survives. Outside
	// cells the trap is a no-op.
	fmt.Fprintf(&script, "trap 'return 130 2>/dev/null' INT; . %s </dev/null; __sbx_rc=$?; trap : INT; exec 1>&251 2>&252; %s", shellQuote(cell), restore)
	fmt.Fprintf(&script, "printf '%%s%%d\\036' %s \"$__sbx_rc\"; printf '%%s0\\036' %s >&2\n", shellQuote(marker), shellQuote(marker))
	if _, err := io.WriteString(p.stdin, script.String()); err != nil {
		return r.writeFailed(ctx, p, out)
	}

	rc, died := p.wait(ctx, marker, out, nil)
	if died {
		p.flush(out)
		return r.died(ctx, p, out)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if rc != 0 {
		// bash_kernel's convention: empty name, exit status as the value.
		out.emit(errorLine("", strconv.Itoa(rc), nil))
	}
	return nil
}

// bashEnv returns commands exporting env for one run and restoring the
// previous values (or unsetting) afterwards.
func bashEnv(env map[string]string) (set, restore string, err error) {
	keys := make([]string, 0, len(env))
	for k := range env {
		if !envNameRe.MatchString(k) {
			return "", "", fmt.Errorf("env var name %q is not a valid shell identifier (use letters, digits and '_', not starting with a digit)", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var s, rs strings.Builder
	for i, k := range keys {
		fmt.Fprintf(&s, "if [ -n \"${%[1]s+x}\" ]; then __sbx_had_%[2]d=1; __sbx_old_%[2]d=\"$%[1]s\"; else __sbx_had_%[2]d=0; fi; export %[1]s=%[3]s; ", k, i, shellQuote(env[k]))
		fmt.Fprintf(&rs, "if [ \"$__sbx_had_%[2]d\" = 1 ]; then export %[1]s=\"$__sbx_old_%[2]d\"; else unset %[1]s; fi; unset __sbx_had_%[2]d __sbx_old_%[2]d; ", k, i)
	}
	return s.String(), rs.String(), nil
}

var errUnsupportedLanguage = errors.New("unsupported language")
