// The official @e2b/code-interpreter SDK against sbx's code interpreter:
// state across runCode calls, streaming output, errors, charts, pandas
// HTML, contexts, restart, per-run envs, bash, JavaScript, and client-side
// cancellation.

import assert from 'node:assert/strict'
import { after, before, it } from 'node:test'

import { Sandbox } from '@e2b/code-interpreter'

import { integration, setup, waitForTemplate } from './harness.mjs'

const env = await setup()
const created = new Set()

integration(env, 'code interpreter (@e2b/code-interpreter)', () => {
  /** @type {Sandbox} */
  let sbx

  before(async () => {
    // The code-interpreter root filesystem is built on first use (minutes).
    await waitForTemplate('code-interpreter')
    // No template argument: the SDK's default, code-interpreter-v1.
    sbx = await Sandbox.create({ timeoutMs: 10 * 60_000 })
    created.add(sbx)
  }, { timeout: 25 * 60_000 })

  after(async () => {
    await Promise.all([...created].map((s) => s.kill().catch(() => {})))
  })

  it('keeps state between runCode calls', async () => {
    await sbx.runCode('x = 1')
    const ex = await sbx.runCode('x + 1')
    assert.equal(ex.text, '2')
    assert.equal(ex.error, undefined)
    assert.ok(ex.executionCount >= 2, `executionCount ${ex.executionCount}`)
  })

  it('streams print output to logs.stdout and onStdout in order', async () => {
    const seen = []
    const ex = await sbx.runCode(
      "import sys\nfor i in range(3):\n    print(f'line {i}', flush=True)\nprint('oops', file=sys.stderr)",
      { onStdout: (m) => seen.push(m.line), onStderr: (m) => seen.push(`err:${m.line}`) },
    )
    assert.equal(ex.logs.stdout.join(''), 'line 0\nline 1\nline 2\n')
    assert.equal(ex.logs.stderr.join(''), 'oops\n')
    assert.deepEqual(seen.filter((l) => !l.startsWith('err:')).join(''), 'line 0\nline 1\nline 2\n')
    assert.equal(seen.at(-1), 'err:oops\n')
  })

  // The kernel sends status, results and display data from the cell's
  // thread at once and skips empty flushes (driver/ipython_startup.py):
  // prints, displays, a background thread's print and the result must
  // still arrive in the order they were made, run after run.
  it('keeps prints, displays and results in order', async () => {
    const code = [
      'import threading',
      'from IPython.display import display',
      "print('a')",
      "display('b')",
      "print('c')",
      "t = threading.Thread(target=lambda: print('t')); t.start(); t.join()",
      "display('d')",
      "'e'",
    ].join('\n')
    for (let i = 0; i < 5; i++) {
      // Consecutive stdout lines are merged: how text is cut into
      // messages is the kernel's choice, the order is not.
      const seen = []
      const ex = await sbx.runCode(code, {
        onStdout: (m) => (seen.at(-1)?.[0] === 'out' ? (seen.at(-1)[1] += m.line) : seen.push(['out', m.line])),
        onResult: (r) => seen.push(['result', r.text]),
      })
      assert.equal(ex.error, undefined)
      assert.deepEqual(seen, [['out', 'a\n'], ['result', 'b'], ['out', 'c\nt\n'], ['result', 'd'], ['result', 'e']])
      assert.equal(ex.text, 'e')
      assert.equal(ex.logs.stdout.join(''), 'a\nc\nt\n')
    }
  })

  it('reports 1/0 as ZeroDivisionError with a traceback', async () => {
    let fromCallback
    const ex = await sbx.runCode('1/0', { onError: (e) => (fromCallback = e) })
    assert.equal(ex.error?.name, 'ZeroDivisionError')
    assert.equal(ex.error?.value, 'division by zero')
    assert.match(ex.error?.traceback ?? '', /ZeroDivisionError/)
    assert.equal(fromCallback?.name, 'ZeroDivisionError')
  })

  it('returns a matplotlib chart as PNG', async () => {
    const ex = await sbx.runCode(
      'import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title("squares")\nplt.show()',
    )
    assert.equal(ex.error, undefined, ex.error?.traceback)
    const png = ex.results.find((r) => r.png)
    assert.ok(png, `no png among ${JSON.stringify(ex.results.map((r) => r.formats()))}`)
    const bytes = Buffer.from(png.png, 'base64')
    assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
    assert.ok(bytes.length > 1000, `png is only ${bytes.length} bytes`)
  })

  it('returns a pandas DataFrame as HTML', async () => {
    const ex = await sbx.runCode("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})")
    const main = ex.results.find((r) => r.isMainResult)
    assert.ok(main?.html?.includes('<table'), `html: ${main?.html}`)
    assert.match(main.text, /a\s+b/)
  })

  it('strips quotes from string results', async () => {
    const ex = await sbx.runCode("'y'")
    assert.equal(ex.text, 'y')
  })

  it('isolates contexts and restarts them', async () => {
    const a = await sbx.createCodeContext()
    const b = await sbx.createCodeContext({ language: 'python', cwd: '/tmp' })
    assert.equal(b.cwd, '/tmp')
    await sbx.runCode('secret = 42', { context: a })
    assert.equal((await sbx.runCode('secret', { context: a })).text, '42')
    const other = await sbx.runCode('secret', { context: b })
    assert.equal(other.error?.name, 'NameError')
    assert.equal((await sbx.runCode('import os; os.getcwd()', { context: b })).text, '/tmp')

    const ids = (await sbx.listCodeContexts()).map((c) => c.id)
    assert.ok(ids.includes(a.id) && ids.includes(b.id), `contexts ${ids}`)

    await sbx.restartCodeContext(a)
    const afterRestart = await sbx.runCode('secret', { context: a })
    assert.equal(afterRestart.error?.name, 'NameError')

    await sbx.removeCodeContext(b)
    assert.ok(!(await sbx.listCodeContexts()).some((c) => c.id === b.id))
    await assert.rejects(sbx.runCode('1', { context: b }), /not found/i)
  })

  it('applies envs to one run only', async () => {
    const code = "import os; os.environ.get('SBX_RUN_ENV', 'unset')"
    assert.equal((await sbx.runCode(code, { envs: { SBX_RUN_ENV: 'only-now' } })).text, 'only-now')
    assert.equal((await sbx.runCode(code)).text, 'unset')
  })

  it('runs bash with persistent shell state', async () => {
    const first = await sbx.runCode('N=5; echo $((N * 2)); echo warn >&2', { language: 'bash' })
    assert.equal(first.logs.stdout.join(''), '10\n')
    assert.equal(first.logs.stderr.join(''), 'warn\n')
    const second = await sbx.runCode('echo "N=$N user=$(whoami)"', { language: 'bash' })
    assert.equal(second.logs.stdout.join(''), 'N=5 user=root\n') // kernels run as root, as in E2B
    const failed = await sbx.runCode('false', { language: 'bash' })
    assert.ok(failed.error, 'a failing command reports an error')
  })

  it('runs JavaScript with persistent state', async () => {
    const first = await sbx.runCode('const base = 40; console.log("from js"); base + 2', { language: 'js' })
    assert.equal(first.text, '42')
    assert.equal(first.logs.stdout.join(''), 'from js\n')
    assert.equal((await sbx.runCode('base * 2', { language: 'javascript' })).text, '80')
    const failed = await sbx.runCode('null.x', { language: 'js' })
    assert.equal(failed.error?.name, 'TypeError')
  })

  it('stops a long run when the client gives up', async () => {
    const ctx = await sbx.createCodeContext()
    await assert.rejects(
      sbx.runCode('import time\ncount = 0\nwhile True:\n    count += 1\n    time.sleep(0.01)', {
        context: ctx,
        timeoutMs: 2_000,
      }),
      (err) => err.name === 'TimeoutError' || /timed out|abort/i.test(String(err)),
    )
    // The loop must have been interrupted: count stops growing, and the
    // context still has its state.
    const ex = await sbx.runCode('import time\nc1 = count\ntime.sleep(0.5)\ncount == c1 and c1 > 0', { context: ctx })
    assert.equal(ex.error, undefined, ex.error?.traceback)
    assert.equal(ex.text, 'True')
  })
})
