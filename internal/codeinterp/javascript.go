package codeinterp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// jsDriver runs inside one node process per context. It evaluates each
// cell in a persistent vm context (so declarations survive between runs),
// awaits a promise result, and reports the value or error as one JSON line
// on fd 3, then an end marker on stdout and stderr so the Go side knows it
// has all of the cell's output. SIGINT interrupts the cell, not the
// process: breakOnSigint for synchronous code, a rejected race for awaits.
// Debian has no JavaScript kernel for Jupyter; this plays its part.
const jsDriver = `
const vm = require('vm'), fs = require('fs'), util = require('util'), readline = require('readline');
const sandbox = { require, console, process, Buffer, URL, URLSearchParams, TextEncoder, TextDecoder,
  setTimeout, setInterval, setImmediate, clearTimeout, clearInterval, clearImmediate, queueMicrotask,
  fetch: globalThis.fetch, structuredClone, module: { exports: {} }, __dirname: process.cwd() };
sandbox.global = sandbox; sandbox.globalThis = sandbox; sandbox.exports = sandbox.module.exports;
const context = vm.createContext(sandbox);
let onInterrupt = null;
process.on('SIGINT', () => { if (onInterrupt) onInterrupt(); });
const reply = (m) => fs.writeSync(3, JSON.stringify(m) + '\n');
const rl = readline.createInterface({ input: process.stdin });
const queue = [];
let busy = false;
rl.on('line', (line) => { queue.push(JSON.parse(line)); pump(); });
async function pump() {
  if (busy) return;
  busy = true;
  while (queue.length) await run(queue.shift());
  busy = false;
}
async function run(req) {
  const saved = {};
  for (const [k, v] of Object.entries(req.env || {})) { saved[k] = process.env[k]; process.env[k] = v; }
  let out;
  try {
    let value = vm.runInContext(req.code, context, { filename: 'cell', breakOnSigint: true });
    if (value && typeof value.then === 'function') {
      value = await Promise.race([value, new Promise((_, rej) => {
        onInterrupt = () => rej(Object.assign(new Error('Execution interrupted'), { name: 'KeyboardInterrupt' }));
      })]);
    }
    out = { id: req.id };
    if (value !== undefined) out.text = typeof value === 'string' ? value : util.inspect(value);
  } catch (e) {
    // Errors thrown in the vm context come from its own realm, so they
    // fail instanceof Error: duck-type them.
    const err = e && typeof e === 'object' && 'message' in e ? e : { name: 'Error', message: String(e), stack: String(e) };
    let name = err.name, value = err.message;
    if (/Script execution (was )?interrupted/.test(err.message)) { name = 'KeyboardInterrupt'; value = 'Execution interrupted'; }
    out = { id: req.id, error: { name, value, traceback: err.stack || String(e) } };
  } finally {
    onInterrupt = null;
    for (const [k, v] of Object.entries(saved)) { if (v === undefined) delete process.env[k]; else process.env[k] = v; }
  }
  reply(out);
  process.stdout.write(req.marker + '0\x1e');
  process.stderr.write(req.marker + '0\x1e');
}
`

// jsRunner keeps one node process per JavaScript context.
type jsRunner struct {
	node, cwd string
	env       []string

	mu         sync.Mutex
	proc       *jsProc
	count      int
	restarting bool
}

type jsProc struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	chunks  chan bashChunk
	replies chan jsReply
	dead    chan struct{}
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

func startJSRunner(node, cwd string, env []string) (*jsRunner, error) {
	r := &jsRunner{node: node, cwd: cwd, env: env}
	p, err := r.start()
	if err != nil {
		return nil, err
	}
	r.proc = p
	return r, nil
}

func (r *jsRunner) start() (*jsProc, error) {
	cmd := exec.Command(r.node, "-e", jsDriver)
	cmd.Dir, cmd.Env = r.cwd, r.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	rp, wp, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.ExtraFiles = []*os.File{wp} // fd 3
	if err := cmd.Start(); err != nil {
		rp.Close()
		wp.Close()
		return nil, fmt.Errorf("start node: %w", err)
	}
	wp.Close()
	p := &jsProc{cmd: cmd, stdin: stdin, chunks: make(chan bashChunk, 64), replies: make(chan jsReply, 4), dead: make(chan struct{})}
	var wg sync.WaitGroup
	pump := func(rd io.Reader, isErr bool) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := rd.Read(buf)
			if n > 0 {
				p.chunks <- bashChunk{stderr: isErr, data: append([]byte(nil), buf[:n]...)}
			}
			if err != nil {
				return
			}
		}
	}
	wg.Add(3)
	go pump(stdout, false)
	go pump(stderr, true)
	go func() {
		defer wg.Done()
		defer rp.Close()
		sc := bufio.NewScanner(rp)
		sc.Buffer(make([]byte, 64<<10), 64<<20)
		for sc.Scan() {
			var rep jsReply
			if json.Unmarshal(sc.Bytes(), &rep) == nil {
				p.replies <- rep
			}
		}
	}()
	go func() {
		wg.Wait()
		_ = cmd.Wait()
		close(p.dead)
	}()
	return p, nil
}

func (r *jsRunner) Execute(ctx context.Context, code string, env map[string]string, out emitter) error {
	r.mu.Lock()
	select {
	case <-r.proc.dead:
		p, err := r.start()
		if err != nil {
			r.mu.Unlock()
			out.emit(errorLine("KernelStartError", err.Error(), nil))
			return err
		}
		r.proc = p
	default:
	}
	p := r.proc
	r.count++
	count := r.count
	r.mu.Unlock()

	out.emit(lineExecutionCount{Type: "number_of_executions", ExecutionCount: count})
	var nonce [12]byte
	_, _ = rand.Read(nonce[:])
	id := hex.EncodeToString(nonce[:])
	marker := "\x1eSBX" + id + ":"
	req, _ := json.Marshal(map[string]any{"id": id, "code": code, "env": env, "marker": marker})
	if _, err := p.stdin.Write(append(req, '\n')); err != nil {
		return r.died(out)
	}
	finished := make(chan struct{})
	defer close(finished)
	var (
		bufs    [2]bytes.Buffer
		done    [2]bool
		reply   *jsReply
		ctxDone = ctx.Done()
	)
	for !done[0] || !done[1] || reply == nil {
		select {
		case c := <-p.chunks:
			i := 0
			if c.stderr {
				i = 1
			}
			bufs[i].Write(c.data)
			text, _, fin := scanMarker(&bufs[i], marker)
			if text != "" {
				out.emit(lineStream{Type: [2]string{"stdout", "stderr"}[i], Text: text, Timestamp: timestamp("")})
			}
			done[i] = done[i] || fin
		case rep := <-p.replies:
			if rep.ID == id {
				reply = &rep
			}
		case <-p.dead:
			return r.died(out)
		case <-ctxDone:
			ctxDone = nil
			go interruptUntil(p.cmd.Process.Pid, finished, p.dead)
		}
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

// interruptUntil sends SIGINT to a process group until finished (a signal
// may land before the cell started), and SIGKILL after 5 s.
func interruptUntil(pid int, finished, dead <-chan struct{}) {
	deadline := time.After(5 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		_ = syscall.Kill(-pid, syscall.SIGINT)
		select {
		case <-tick.C:
		case <-deadline:
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			return
		case <-finished:
			return
		case <-dead:
			return
		}
	}
}

func (r *jsRunner) died(out emitter) error {
	r.mu.Lock()
	restarting := r.restarting
	r.mu.Unlock()
	if restarting {
		out.emit(errorLine("ContextRestarting", "Context was restarted during execution", nil))
	} else {
		out.emit(errorLine("UnexpectedEndOfExecution", "The node process exited during execution; its state is lost and it restarts on the next run", nil))
	}
	return nil
}

func (r *jsRunner) Restart(ctx context.Context) error {
	r.mu.Lock()
	old := r.proc
	r.restarting = true
	r.mu.Unlock()
	killJS(old)
	p, err := r.start()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.restarting = false
	if err != nil {
		return err
	}
	r.proc, r.count = p, 0
	return nil
}

func killJS(p *jsProc) {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	for {
		select {
		case <-p.chunks:
			continue
		case <-p.replies:
			continue
		case <-p.dead:
		}
		break
	}
}

func (r *jsRunner) Close(ctx context.Context) error {
	r.mu.Lock()
	p := r.proc
	r.mu.Unlock()
	killJS(p)
	return nil
}
