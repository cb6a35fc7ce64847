package codeinterp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sbxdev/sbx/internal/codeinterp/jupyter"
)

// runner executes code for one context. Execute calls are serialized by
// the context; Restart and Close may be called while Execute runs.
type runner interface {
	Execute(ctx context.Context, code string, env map[string]string, out emitter) error
	Restart(ctx context.Context) error
	Close(ctx context.Context) error
}

// kernelRunner runs code in a Jupyter kernel, restarting it on demand
// after it died.
type kernelRunner struct {
	spec    *jupyter.KernelSpec
	opts    jupyter.Options
	log     *slog.Logger
	envSet  envSnippets // nil: the kernel's language cannot take env_vars
	envKeep envKeep

	mu         sync.Mutex
	k          *jupyter.Kernel
	restarting bool
	closed     bool   // Close was called: no kernel is started again
	lost       string // why the last kernel's state was lost unseen; told to the next run
	deathTold  bool   // the current kernel's death was reported to a run
}

// envSnippets builds the code that sets env vars before an execution and
// restores them afterwards, in the kernel's language.
type envSnippets func(env map[string]string) (set, restore string)

// envKeep builds the code that sets env vars for good.
type envKeep func(env map[string]string) string

// startKernelRunner starts a kernel of spec; an IPython kernel runs
// startup (driver/ipython_startup.py) first.
func startKernelRunner(ctx context.Context, spec *jupyter.KernelSpec, startup string, opts jupyter.Options, log *slog.Logger) (*kernelRunner, error) {
	r := &kernelRunner{spec: spec, opts: opts, log: log}
	switch strings.ToLower(spec.Language) {
	case "python":
		r.envSet, r.envKeep = pythonEnv, pythonKeepEnv
		spec = ipykernelArgs(spec, startup)
		r.spec = spec
	case "r":
		r.envSet, r.envKeep = rEnv, rKeepEnv
	}
	k, err := jupyter.Start(ctx, spec, opts)
	if err != nil {
		return nil, err
	}
	r.k = k
	return r, nil
}

// kernel returns the live kernel, starting a new one if the last one died.
func (r *kernelRunner) kernel(ctx context.Context) (*jupyter.Kernel, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, fmt.Errorf("context of kernel %s: %w", r.spec.Name, jupyter.ErrKernelClosed)
	}
	select {
	case <-r.k.Dead():
		r.log.Warn("kernel had died, starting a new one", "kernel", r.spec.Name)
		if r.lost == "" && !r.deathTold {
			r.lost = diedBetweenRuns("The kernel", "it ended")
		}
		_ = r.k.Shutdown(ctx)
		k, err := jupyter.Start(ctx, r.spec, r.opts)
		if err != nil {
			return nil, err
		}
		r.k, r.deathTold = k, false
	default:
	}
	return r.k, nil
}

func (r *kernelRunner) Execute(ctx context.Context, code string, env map[string]string, out emitter) error {
	k, err := r.kernel(ctx)
	if err != nil {
		out.emit(errorLine("KernelStartError", err.Error(), nil))
		return err
	}
	if r.tellLost(out) {
		return nil
	}
	if len(env) > 0 && r.envSet != nil {
		set, restore := r.envSet(env)
		if err := r.silent(ctx, k, set); err != nil {
			out.emit(errorLine("EnvVarsError", err.Error(), nil))
			return err
		}
		// Restore even if the client went away, or the next run would see
		// this run's variables.
		defer func() {
			select {
			case <-k.Dead():
				return // killed or died: its env went with it
			default:
			}
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if err := r.silent(rctx, k, restore); err != nil {
				r.log.Warn("restore env vars", "err", err)
			}
		}()
	}
	t := &translator{out: out}
	reply, err := k.Execute(ctx, jupyter.ExecuteRequest{Code: code, StoreHistory: true}, t.onIOPub)
	if errors.Is(err, jupyter.ErrStillBusy) || errors.Is(err, jupyter.ErrKernelDied) {
		r.mu.Lock()
		if r.k == k {
			r.deathTold = true // told below, or to the next run by markLost
		}
		r.mu.Unlock()
	}
	switch {
	case errors.Is(err, jupyter.ErrStillBusy):
		// The client is gone and the cell outlived every interrupt: the
		// kernel would answer nothing else, and the context's next run
		// would wait behind it for good.
		r.log.Warn("execution abandoned by its client ignored interrupts: killing the kernel", "kernel", r.spec.Name, "pid", k.Pid())
		k.Kill()
		r.markLost(abandonedKilled)
		return err
	case errors.Is(err, jupyter.ErrKernelDied) && ctx.Err() != nil:
		// Died after its client left: nobody saw the error line.
		r.markLost(abandonedDied)
		return err
	case errors.Is(err, jupyter.ErrKernelDied):
		r.mu.Lock()
		restarting := r.restarting
		r.mu.Unlock()
		if restarting {
			out.emit(errorLine("ContextRestarting", "Context was restarted during execution", nil))
		} else {
			out.emit(errorLine("UnexpectedEndOfExecution", "The kernel died during execution ("+err.Error()+"); its state is lost and it restarts on the next run", nil))
		}
		return nil
	case errors.Is(err, jupyter.ErrInterrupted):
		return err // the client is gone; nobody reads an error line
	case err != nil:
		out.emit(errorLine("ExecutionError", err.Error(), nil))
		return err
	}
	if !t.sawError {
		switch reply.Status {
		case "error":
			out.emit(errorLine(reply.EName, reply.EValue, reply.Traceback))
		case "aborted":
			out.emit(errorLine("ExecutionAborted", "Execution was aborted", nil))
		}
	}
	return nil
}

// SetEnv sets env vars in the kernel for good (the sandbox's own env, which
// arrived after the kernel started), leaving no name behind. Kernels of
// other languages (no envSet) ignore it, as they ignore per-run env vars.
func (r *kernelRunner) SetEnv(ctx context.Context, env map[string]string) error {
	if r.envSet == nil {
		return nil
	}
	k, err := r.kernel(ctx)
	if err != nil {
		return err
	}
	return r.silent(ctx, k, r.envKeep(env))
}

// silentRun runs setup code in the current kernel (see silent).
func (r *kernelRunner) silentRun(ctx context.Context, code string) error {
	k, err := r.kernel(ctx)
	if err != nil {
		return err
	}
	return r.silent(ctx, k, code)
}

// silent runs setup code without touching history or execution count.
func (r *kernelRunner) silent(ctx context.Context, k *jupyter.Kernel, code string) error {
	reply, err := k.Execute(ctx, jupyter.ExecuteRequest{Code: code, Silent: true}, nil)
	if err != nil {
		return err
	}
	if reply.Status != "ok" {
		return fmt.Errorf("%s: %s", reply.EName, reply.EValue)
	}
	return nil
}

// markLost records, for the next run, that the kernel's state was lost
// after a run's client had gone (unless a restart was asked for, which
// the user knows about).
func (r *kernelRunner) markLost(why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.restarting {
		r.lost = why
	}
}

// tellLost reports a loss markLost recorded, once, as the run's error, in
// place of running its code: that code was written for the state that
// is gone.
func (r *kernelRunner) tellLost(out emitter) bool {
	r.mu.Lock()
	why := r.lost
	r.lost = ""
	r.mu.Unlock()
	if why == "" {
		return false
	}
	out.emit(errorLine("ContextRestarted", why, nil))
	return true
}

func (r *kernelRunner) Restart(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return fmt.Errorf("restart kernel %s: %w", r.spec.Name, jupyter.ErrKernelClosed)
	}
	old := r.k
	r.restarting = true
	r.lost = ""
	r.mu.Unlock()
	_ = old.Shutdown(ctx)
	k, err := jupyter.Start(ctx, r.spec, r.opts)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.restarting = false
	if err != nil {
		return fmt.Errorf("restart kernel %s: %w", r.spec.Name, err)
	}
	if r.closed { // closed while this one started: it must not outlive us
		k.Kill()
		return fmt.Errorf("restart kernel %s: %w", r.spec.Name, jupyter.ErrKernelClosed)
	}
	r.k, r.deathTold = k, false
	return nil
}

func (r *kernelRunner) Close(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	k := r.k
	r.mu.Unlock()
	return k.Shutdown(ctx)
}

// What the run after an abandoned one is told (as a ContextRestarted
// error, in place of running its code), like Jupyter's "the kernel died
// and was restarted".
const (
	abandonedKilled = "The previous execution in this context was abandoned by its client (it disconnected or timed out) and kept running after being interrupted, so its process was killed. The context starts afresh: its state (variables, imports, files it held open) is lost. This code was not run; run it again."
	abandonedDied   = "The previous execution in this context was abandoned by its client (it disconnected or timed out) and its process then exited. The context starts afresh: its state (variables, imports, files it held open) is lost. This code was not run; run it again."
)

// diedBetweenRuns is what the run after an unseen death is told: the
// process ended while no run was in it (a thread or child of an earlier
// cell ended it, or the out-of-memory killer did), so nobody saw it go.
func diedBetweenRuns(what, how string) string {
	return what + " of this context exited between runs (" + how + "): code an earlier run left running ended it, or it ran out of memory. " +
		"The context starts afresh: its state (variables, imports, files it held open) is lost. This code was not run; run it again."
}

// exitText says how a process ended ("exit status 3", "signal: killed").
func exitText(ps *os.ProcessState) string {
	if ps == nil {
		return "its exit status is unknown"
	}
	return ps.String()
}

// pythonEnv sets os.environ for one execution and restores it afterwards.
// The values travel as JSON, which is valid Python literal syntax for a
// dict of strings, so no user value can break out of the snippet.
func pythonEnv(env map[string]string) (set, restore string) {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	kj, _ := json.Marshal(keys)
	ej, _ := json.Marshal(env)
	set = fmt.Sprintf("import os as __sbx_os\n__sbx_saved_env = {k: __sbx_os.environ.get(k) for k in %s}\n__sbx_os.environ.update(%s)\n", kj, ej)
	restore = "for __sbx_k, __sbx_v in __sbx_saved_env.items():\n" +
		"    if __sbx_v is None: __sbx_os.environ.pop(__sbx_k, None)\n" +
		"    else: __sbx_os.environ[__sbx_k] = __sbx_v\n" +
		"del __sbx_saved_env, __sbx_k, __sbx_v\n"
	return set, restore
}

func pythonKeepEnv(env map[string]string) string {
	ej, _ := json.Marshal(env)
	return fmt.Sprintf("import os as __sbx_os\n__sbx_os.environ.update(%s)\ndel __sbx_os\n", ej)
}

// ipykernelArgs adds to an IPython kernel's command line:
//   - the start-up file (charts, DataFrame data, PIL images as results);
//   - input history kept in memory: by default every cell is committed to
//     ~/.ipython/.../history.sqlite, which costs ~1.7 ms of the ~5 ms a
//     trivial run takes and writes to the sandbox disk (In, Out and
//     %history still work within the session);
//   - tracebacks without ANSI colours, as E2B's kernels send them.
func ipykernelArgs(spec *jupyter.KernelSpec, startup string) *jupyter.KernelSpec {
	isIPyKernel := false
	for _, a := range spec.Argv {
		if a == "ipykernel_launcher" || a == "ipykernel" {
			isIPyKernel = true
		}
	}
	if !isIPyKernel {
		return spec
	}
	s := *spec
	s.Argv = append(append([]string(nil), spec.Argv...), "--HistoryManager.hist_file=:memory:", "--InteractiveShell.colors=NoColor")
	if startup != "" {
		s.Argv = append(s.Argv, "--IPKernelApp.exec_files="+startup)
	}
	return &s
}

// rEnv sets Sys.setenv for one execution and restores the previous values
// afterwards. JSON strings are valid R string literals (Go's encoder
// escapes only with \", \\, \n, \r, \t and \uXXXX, all of which R reads).
func rEnv(env map[string]string) (set, restore string) {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	names := make([]string, len(keys))
	pairs := make([]string, len(keys))
	for i, k := range keys {
		kj, _ := json.Marshal(k)
		vj, _ := json.Marshal(env[k])
		names[i] = string(kj)
		pairs[i] = string(kj) + " = " + string(vj)
	}
	set = fmt.Sprintf(".sbx_saved_env <- Sys.getenv(c(%s), unset = NA, names = TRUE)\n", strings.Join(names, ", "))
	if len(pairs) > 0 {
		set += fmt.Sprintf("do.call(Sys.setenv, as.list(c(%s)))\n", strings.Join(pairs, ", "))
	}
	restore = "local({\n" +
		"  s <- .sbx_saved_env\n" +
		"  for (k in names(s)) if (is.na(s[[k]])) Sys.unsetenv(k) else do.call(Sys.setenv, setNames(list(s[[k]]), k))\n" +
		"})\n" +
		"rm(.sbx_saved_env)\n"
	return set, restore
}

func rKeepEnv(env map[string]string) string {
	set, _ := rEnv(env)
	return set + "rm(.sbx_saved_env)\n"
}

// kernelOutput adapts the kernel process's own output to the logger.
type kernelOutput struct {
	log *slog.Logger
}

var _ io.Writer = kernelOutput{}

func (w kernelOutput) Write(p []byte) (int, error) {
	w.log.Debug("kernel output", "text", string(p))
	return len(p), nil
}
