package codeinterp

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
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

func startJSRunner(node, cwd string, env []string) (*jsRunner, error) {
	r := &jsRunner{node: node, cwd: cwd, env: env}
	if err := r.init("node", r.start); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *jsRunner) start() (*replProc, error) {
	cmd := exec.Command(r.node, "-e", jsDriver)
	cmd.Dir, cmd.Env = r.cwd, r.env
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
	id, marker := newMarker()
	req, _ := json.Marshal(map[string]any{"id": id, "code": code, "env": env, "marker": marker})
	if _, err := p.stdin.Write(append(req, '\n')); err != nil {
		return r.died(out)
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
		return r.died(out)
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
