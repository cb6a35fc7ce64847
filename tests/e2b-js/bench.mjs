// Benchmarks through the official SDKs against a running sbx server
// (eval "$(sbx env)" first). Prints medians and p95 in milliseconds.
//
//   node bench.mjs                 # all scenarios
//   node bench.mjs tti runcode     # some of them
//
// Scenarios:
//   tti        Sandbox.create() → first commands.run() result, sequential
//   tti20      the same, 20 at once (3 waves)
//   tti50      the same, 50 at once (3 waves; start sbx with --pool base=50:60 to
//              measure warm starts)
//   runcode    runCode("1+1") round trip on a ready code-interpreter sandbox
//   ci-first   Sandbox.create() (code-interpreter) → first runCode with numpy imported
//              (SBX_BENCH_REFILL_MS, default 500: pause between creates for the
//              warm pool to refill; on a busy machine a pool takes seconds)
import { Sandbox } from 'e2b'
import { Sandbox as CodeSandbox } from '@e2b/code-interpreter'

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(s.length * p))]
}
const report = (name, xs) =>
  console.log(`${name.padEnd(12)} n=${String(xs.length).padStart(3)}  p50 ${pct(xs, 0.5).toFixed(1).padStart(7)} ms  p95 ${pct(xs, 0.95).toFixed(1).padStart(7)} ms  min ${Math.min(...xs).toFixed(1)}  max ${Math.max(...xs).toFixed(1)}`)

// timedCreate measures Sandbox.create() → first commands.run() result and
// returns the duration with the sandbox, which the caller kills outside
// the timed path.
async function timedCreate() {
  const t0 = performance.now()
  const sbx = await Sandbox.create()
  await sbx.commands.run('echo ok')
  return { d: performance.now() - t0, sbx }
}

async function tti() {
  const { d, sbx } = await timedCreate()
  await sbx.kill()
  return d
}

// concurrent runs `waves` waves of n creates started together; each wave's
// sandboxes are killed after the whole wave finished (as `sbx bench tti`
// does), so kills never compete with a timed create. The pool refills
// between waves.
async function concurrent(n, waves = 3) {
  const xs = []
  for (let w = 0; w < waves; w++) {
    const rs = await Promise.all(Array.from({ length: n }, () => timedCreate()))
    xs.push(...rs.map((r) => r.d))
    await Promise.all(rs.map((r) => r.sbx.kill()))
    await new Promise((res) => setTimeout(res, 3000))
  }
  return xs
}

const scenarios = {
  async tti() {
    await tti() // warm the HTTP connections
    const xs = []
    for (let i = 0; i < 30; i++) xs.push(await tti())
    report('tti', xs)
  },
  async tti20() { report('tti x20', await concurrent(20)) },
  async tti50() { report('tti x50', await concurrent(50)) },
  async runcode() {
    const sbx = await CodeSandbox.create()
    try {
      for (let i = 0; i < 10; i++) await sbx.runCode('1+1')
      const xs = []
      for (let i = 0; i < 200; i++) {
        const t0 = performance.now()
        const r = await sbx.runCode('1+1')
        xs.push(performance.now() - t0)
        if (r.text !== '2') throw new Error(`runCode gave ${r.text}`)
      }
      report('runcode', xs)
    } finally { await sbx.kill() }
  },
  async 'ci-first'() {
    const xs = []
    for (let i = 0; i < 10; i++) {
      const t0 = performance.now()
      const sbx = await CodeSandbox.create()
      const r = await sbx.runCode('import numpy as np\nnp.arange(3).sum()')
      xs.push(performance.now() - t0)
      if (r.text !== '3') throw new Error(`runCode gave ${r.text}`)
      await sbx.kill()
      await new Promise((res) => setTimeout(res, Number(process.env.SBX_BENCH_REFILL_MS || 500))) // let the pool refill
    }
    report('ci-first', xs)
  },
}

const wanted = process.argv.slice(2)
for (const [name, fn] of Object.entries(scenarios)) {
  if (wanted.length === 0 || wanted.includes(name)) await fn()
}
