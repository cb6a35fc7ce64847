// The official @e2b/code-interpreter SDK against sbx's code interpreter, for
// what E2B's own kernels give beyond text (issue 14): matplotlib charts as
// data, DataFrames as data, images shown on save, a JavaScript/TypeScript
// kernel with ES modules and top-level await, R, the default contexts and
// their order, and kernels running as root.

import assert from 'node:assert/strict'
import { after, before, it } from 'node:test'

import { Sandbox } from '@e2b/code-interpreter'

import { integration, sandboxFetch, setup, waitForTemplate } from './harness.mjs'

const env = await setup()
const created = new Set()

// The one chart among an execution's results; charts keep their PNG.
function chartOf(ex) {
  assert.equal(ex.error, undefined, ex.error?.traceback)
  const charts = ex.results.filter((r) => r.chart)
  assert.equal(charts.length, 1, `results: ${JSON.stringify(ex.results.map((r) => r.formats()))}`)
  assert.ok(charts[0].png, 'the chart result has no PNG')
  return charts[0].chart
}

const plt = 'import matplotlib.pyplot as plt\n'

integration(env, 'code interpreter parity with E2B (@e2b/code-interpreter)', () => {
  /** @type {Sandbox} */
  let sbx

  before(async () => {
    await waitForTemplate('code-interpreter')
    sbx = await Sandbox.create({ timeoutMs: 10 * 60_000, envs: { SBX_SANDBOX_ENV: 'from-create' } })
    created.add(sbx)
  }, { timeout: 25 * 60_000 })

  after(async () => {
    await Promise.all([...created].map((s) => s.kill().catch(() => {})))
  })

  it('starts python and javascript contexts and lists contexts in creation order', async () => {
    const start = await sbx.listCodeContexts()
    assert.deepEqual(start.map((c) => c.language), ['python', 'javascript'])
    const a = await sbx.createCodeContext({ language: 'python' })
    const b = await sbx.createCodeContext({ language: 'js' })
    const c = await sbx.createCodeContext({ language: 'python', cwd: '/tmp' })
    const ids = (await sbx.listCodeContexts()).map((x) => x.id)
    assert.deepEqual(ids, [...start.map((x) => x.id), a.id, b.id, c.id])
    for (const x of [a, b, c]) await sbx.removeCodeContext(x)
  })

  it('runs kernels as root, so a context can work in /root', async () => {
    const ctx = await sbx.createCodeContext({ cwd: '/root' })
    assert.equal(ctx.cwd, '/root')
    const ex = await sbx.runCode('import os, getpass; print(os.getcwd(), getpass.getuser())', { context: ctx })
    assert.equal(ex.error, undefined, ex.error?.traceback)
    assert.equal(ex.logs.stdout.join(''), '/root root\n')
    const js = await sbx.runCode('process.getuid()', { language: 'js' })
    assert.equal(js.text, '0')
  })

  it('returns a line chart as data', async () => {
    const chart = chartOf(await sbx.runCode(`${plt}plt.plot([1, 2, 3], [1, 4, 9], label='squares')\nplt.title('Growth')\nplt.xlabel('Time (s)')\nplt.ylabel('Size')\nplt.show()`))
    assert.equal(chart.type, 'line')
    assert.equal(chart.title, 'Growth')
    assert.equal(chart.x_label, 'Time (s)')
    assert.equal(chart.x_unit, 's')
    assert.equal(chart.x_scale, 'linear')
    assert.deepEqual(chart.elements, [{ label: 'squares', points: [[1, 1], [2, 4], [3, 9]] }])
  })

  it('returns a scatter chart as data', async () => {
    const chart = chartOf(await sbx.runCode(`${plt}plt.scatter([1, 2, 3], [3, 1, 2], label='pts')\nplt.title('Spread')\nplt.show()`))
    assert.equal(chart.type, 'scatter')
    assert.equal(chart.title, 'Spread')
    assert.deepEqual(chart.elements, [{ label: 'pts', points: [[1, 3], [2, 1], [3, 2]] }])
  })

  it('returns a bar chart as data', async () => {
    const chart = chartOf(await sbx.runCode(`${plt}plt.bar(['Author A', 'Author B', 'Author C'], [100, 200, 300], label='Books Sold')\nplt.title('Book Sales')\nplt.xlabel('Authors')\nplt.ylabel('Sold')\nplt.show()`))
    assert.equal(chart.type, 'bar')
    assert.equal(chart.title, 'Book Sales')
    assert.equal(chart.x_label, 'Authors')
    assert.equal(chart.y_label, 'Sold')
    assert.deepEqual(chart.elements, [
      { label: 'Author A', group: 'Books Sold', value: 100 },
      { label: 'Author B', group: 'Books Sold', value: 200 },
      { label: 'Author C', group: 'Books Sold', value: 300 },
    ])
  })

  it('returns a pie chart as data', async () => {
    const chart = chartOf(await sbx.runCode(`${plt}fig, ax = plt.subplots()\nax.pie([90, 10], labels=['No', 'No, in blue'], autopct='%1.1f%%', startangle=90)\nax.set_title('Will I wake up early tomorrow?')\nplt.show()`))
    assert.equal(chart.type, 'pie')
    assert.equal(chart.title, 'Will I wake up early tomorrow?')
    assert.deepEqual(chart.elements, [
      { label: 'No', angle: 324, radius: 1 },
      { label: 'No, in blue', angle: 36, radius: 1 },
    ])
  })

  it('returns a box-and-whisker chart as data', async () => {
    const chart = chartOf(await sbx.runCode(`${plt}fig, ax = plt.subplots()\nax.boxplot([[85, 90, 78, 92, 88], [95, 89, 76, 91, 84, 87, 40]], labels=['Class A', 'Class B'], patch_artist=True)\nax.set_title('Exam Scores')\nax.set_xlabel('Class')\nax.set_ylabel('Score')\nplt.show()`))
    assert.equal(chart.type, 'box_and_whisker')
    assert.equal(chart.title, 'Exam Scores')
    assert.equal(chart.x_label, 'Class')
    assert.equal(chart.y_label, 'Score')
    assert.deepEqual(chart.elements, [
      { label: 'Class A', min: 78, first_quartile: 85, median: 88, third_quartile: 90, max: 92, outliers: [] },
      { label: 'Class B', min: 76, first_quartile: 80, median: 87, third_quartile: 90, max: 95, outliers: [40] },
    ])
  })

  it('returns several subplots as a superchart', async () => {
    const chart = chartOf(await sbx.runCode(`${plt}fig, axs = plt.subplots(1, 2)\nfig.suptitle('Multiple Charts')\naxs[0].plot([0, 1], [1, 0])\naxs[0].set_title('Falling')\naxs[1].scatter([1], [2], label='one')\naxs[1].set_title('Point')\nplt.show()`))
    assert.equal(chart.type, 'superchart')
    assert.equal(chart.title, 'Multiple Charts')
    assert.deepEqual(chart.elements.map((c) => [c.type, c.title]), [['line', 'Falling'], ['scatter', 'Point']])
    assert.deepEqual(chart.elements[0].elements, [{ label: 'Line 0', points: [[0, 1], [1, 0]] }])
    assert.deepEqual(chart.elements[1].elements, [{ label: 'one', points: [[1, 2]] }])
  })

  it('reports a chart it cannot read as unknown', async () => {
    const chart = chartOf(await sbx.runCode(`${plt}fig, ax = plt.subplots()\nax.add_artist(plt.Circle((0, 0), 1))\nax.set_title('Circle')\nplt.show()`))
    assert.deepEqual(chart, { type: 'unknown', title: 'Circle', elements: [] })
  })

  it('returns a DataFrame as data', async () => {
    const ex = await sbx.runCode("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', None], 'when': pd.to_datetime(['2024-01-01', '2024-02-01'])})")
    assert.equal(ex.error, undefined, ex.error?.traceback)
    const main = ex.results.find((r) => r.isMainResult)
    assert.ok(main.html?.includes('<table'))
    assert.deepEqual(main.data, { a: [1, 2], b: ['x', null], when: ['2024-01-01T00:00:00', '2024-02-01T00:00:00'] })
  })

  it('shows an image saved with PIL', async () => {
    const ex = await sbx.runCode("from PIL import Image\nImage.new('RGB', (16, 8), (0, 128, 255)).save('/tmp/blue.png')")
    assert.equal(ex.error, undefined, ex.error?.traceback)
    const img = ex.results.find((r) => r.png)
    assert.ok(img, `results: ${JSON.stringify(ex.results.map((r) => r.formats()))}`)
    assert.deepEqual([...Buffer.from(img.png, 'base64').subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47])
    assert.equal(await sbx.files.exists('/tmp/blue.png'), true)
  })

  it('imports ES modules in JavaScript: installed packages and Node built-ins', async () => {
    // A package as npm installs it, ES-module only (exports with "import").
    await sbx.files.write([
      { path: '/home/user/node_modules/shout/package.json', data: JSON.stringify({ name: 'shout', type: 'module', exports: { '.': { import: './index.js' } } }) },
      { path: '/home/user/node_modules/shout/index.js', data: 'export default (s) => s.toUpperCase() + "!"\nexport const version = "1.0.0"\n' },
    ])
    const ex = await sbx.runCode("import shout, { version } from 'shout'\nimport { createHash } from 'node:crypto'\nimport path from 'path'\n[shout('hi'), version, path.basename('/a/b.txt'), createHash('sha256').update('x').digest('hex').slice(0, 8)].join(' ')", { language: 'js' })
    assert.equal(ex.error, undefined, ex.error?.traceback)
    assert.equal(ex.text, 'HI! 1.0.0 b.txt 2d711642')
    // Imported names stay bound in later runs.
    assert.equal((await sbx.runCode("shout('again')", { language: 'javascript' })).text, 'AGAIN!')
  })

  it('awaits at the top level in JavaScript and keeps the state', async () => {
    const ex = await sbx.runCode('async function main() {\n  return "Hello, World!"\n}\nconst greeting = await main()\ngreeting', { language: 'js' })
    assert.equal(ex.error, undefined, ex.error?.traceback)
    assert.equal(ex.text, 'Hello, World!')
    const later = await sbx.runCode('const greeting = greeting.length; greeting', { language: 'js' })
    assert.equal(later.text, '13')
    const failed = await sbx.runCode('await Promise.reject(new RangeError("nope"))', { language: 'js' })
    assert.equal(failed.error?.name, 'RangeError')
    assert.equal(failed.error?.value, 'nope')
    assert.match(failed.error?.traceback ?? '', /RangeError: nope/)
  })

  it('runs TypeScript with an interface and annotations', async () => {
    const ex = await sbx.runCode('interface Point { x: number; y: number }\nfunction norm(p: Point): number {\n  return Math.hypot(p.x, p.y)\n}\nconst origin: Point = { x: 3, y: 4 }\nnorm(origin)', { language: 'ts' })
    assert.equal(ex.error, undefined, ex.error?.traceback)
    assert.equal(ex.text, '5')
    assert.equal((await sbx.runCode('norm({ x: 6, y: 8 } as Point)', { language: 'typescript' })).text, '10')
    const bad = await sbx.runCode('const n: number = ', { language: 'ts' })
    assert.equal(bad.error?.name, 'SyntaxError')
  })

  it('runs R', async () => {
    const ex = await sbx.runCode('1+1', { language: 'r' })
    assert.equal(ex.error, undefined, ex.error?.traceback)
    assert.equal(ex.results[0]?.text, '[1] 2')
  })

  it('gives R the sandbox env vars and per-run ones', async () => {
    const run = await sbx.runCode('Sys.getenv("SBX_R_VAR")', { language: 'r', envs: { SBX_R_VAR: 'only-now' } })
    assert.equal(run.results[0]?.text, '[1] "only-now"')
    const after = await sbx.runCode('Sys.getenv("SBX_R_VAR", unset = "unset")', { language: 'r' })
    assert.equal(after.results[0]?.text, '[1] "unset"')
    const fromCreate = await sbx.runCode('Sys.getenv("SBX_SANDBOX_ENV")', { language: 'r' })
    assert.equal(fromCreate.results[0]?.text, '[1] "from-create"')
  })

  it('names the available languages for one it does not have', async () => {
    // The SDK shows only the status of a 400...
    await assert.rejects(sbx.runCode('System.out.println(1);', { language: 'java' }), /400/)
    // ...whose body says what to use instead.
    const res = await sandboxFetch(sbx.sandboxId, 49999, '/contexts', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ language: 'java' }),
    })
    assert.equal(res.status, 400)
    assert.match(res.text, /"java" is not available/)
    assert.match(res.text, /python, javascript, typescript, r, bash/)
  })
})
