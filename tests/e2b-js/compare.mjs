// Side-by-side benchmark of several running servers through the official
// SDK, in one run: samples are interleaved (one on each server in turn), so
// machine noise lands on all of them alike. Prints p50/p95 per server and
// the ratio of each p50 to the first server's.
//
//   SBX_COMPARE='old=http://127.0.0.1:3901,e2b_...;new=http://127.0.0.1:3902,e2b_...' \
//     node compare.mjs [tti|runcode ...] [--n 40]
//
// scripts/bench-compare.sh starts the servers and sets SBX_COMPARE.
//
// Scenarios:
//   tti      Sandbox.create() → first commands.run('echo ok') result, then kill
//            outside the timed path (default settings: the pool refills as
//            users see it)
//   loop     Sandbox.create() → commands.run('echo ok') → kill(), all timed,
//            in blocks of --block samples back to back on one server (a tight
//            create/kill loop, as a user's script runs it: the pool must keep
//            up with no pause between samples)
//   burst    50 creates at once, each timed to its first command's result
//   runcode  runCode("1+1") on a ready code-interpreter sandbox
//
// Cold creates (no pool): start the servers with SBX_SERVE_ARGS='--pool
// base=0:0' (scripts/bench-compare.sh passes it on) and run tti.
import { Sandbox } from 'e2b'
import { Sandbox as CodeSandbox } from '@e2b/code-interpreter'
import { readFileSync } from 'node:fs'

// sandboxCPU returns the CPU time (ms) a sandbox's cgroup has used, or
// undefined when it cannot be read (not root, another cgroup layout).
function sandboxCPU(id) {
  try {
    return Number(readFileSync(`/sys/fs/cgroup/cpuacct/sbx/${id}/cpuacct.usage`, 'utf8')) / 1e6
  } catch {}
  try {
    const m = readFileSync(`/sys/fs/cgroup/sbx/${id}/cpu.stat`, 'utf8').match(/^usage_usec (\d+)/m)
    return m ? Number(m[1]) / 1e3 : undefined
  } catch {}
  return undefined
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(s.length * p))]
}

const servers = (process.env.SBX_COMPARE || '').split(';').filter(Boolean).map((entry) => {
  const [name, rest] = entry.split('=')
  const [url, key] = (rest || '').split(',')
  if (!name || !url || !key) throw new Error(`SBX_COMPARE entry ${JSON.stringify(entry)}: want name=apiURL,apiKey`)
  return { name, opts: { apiUrl: url, sandboxUrl: url, apiKey: key } }
})
if (servers.length === 0) {
  console.error('set SBX_COMPARE=name=apiURL,apiKey;name2=... (scripts/bench-compare.sh does)')
  process.exit(2)
}

const args = process.argv.slice(2)
let n = 40
const ni = args.indexOf('--n')
if (ni >= 0) { n = Number(args[ni + 1]); args.splice(ni, 2) }
let block = 1
const bi = args.indexOf('--block')
if (bi >= 0) { block = Number(args[bi + 1]); args.splice(bi, 2) }
const wanted = args.length ? args : ['tti']

const scenarios = {
  // sample returns one duration in ms on server s.
  tti: {
    async setup() {},
    async sample(s) {
      const t0 = performance.now()
      const sbx = await Sandbox.create(s.opts)
      const r = await sbx.commands.run('echo ok')
      const d = performance.now() - t0
      if (r.stdout !== 'ok\n') throw new Error(`${s.name}: echo gave ${JSON.stringify(r.stdout)}`)
      await sbx.kill()
      return d
    },
    async teardown() {},
  },
  loop: {
    block: 10,
    async setup() {},
    async sample(s) {
      const t0 = performance.now()
      const sbx = await Sandbox.create(s.opts)
      const r = await sbx.commands.run('echo ok')
      await sbx.kill()
      const d = performance.now() - t0
      if (r.stdout !== 'ok\n') throw new Error(`${s.name}: echo gave ${JSON.stringify(r.stdout)}`)
      return d
    },
    async teardown() {},
  },
  // burst: 50 creates at once (each sample one create's time to its
  // echo); --n counts samples, so --n 100 is two bursts per server.
  burst: {
    block: 50,
    async setup() {},
    async sample(s) {
      s.burst ??= []
      if (s.burst.length === 0) {
        s.burst = await Promise.all(Array.from({ length: 50 }, async () => {
          const t0 = performance.now()
          const sbx = await Sandbox.create(s.opts)
          const r = await sbx.commands.run('echo ok')
          const d = performance.now() - t0
          if (r.stdout !== 'ok\n') throw new Error(`${s.name}: echo gave ${JSON.stringify(r.stdout)}`)
          return { d, sbx }
        }))
        await Promise.all(s.burst.map((x) => x.sbx.kill()))
      }
      return s.burst.pop().d
    },
    async teardown() {},
  },
  runcode: {
    async setup(s) {
      s.ci = await CodeSandbox.create(s.opts)
      for (let i = 0; i < 10; i++) await s.ci.runCode('1+1')
    },
    async sample(s) {
      const c0 = sandboxCPU(s.ci.sandboxId)
      const t0 = performance.now()
      const r = await s.ci.runCode('1+1')
      const d = performance.now() - t0
      const c1 = sandboxCPU(s.ci.sandboxId)
      if (r.text !== '2') throw new Error(`${s.name}: runCode gave ${r.text}`)
      // The sandbox's own CPU per run (code interpreter server + kernel):
      // on a shared machine it moves much less than the wall-clock time.
      if (c0 !== undefined && c1 !== undefined) (s.cpu ??= []).push(c1 - c0)
      return d
    },
    async teardown(s) { await s.ci.kill() },
  },
}

for (const name of wanted) {
  const sc = scenarios[name]
  if (!sc) throw new Error(`unknown scenario ${name}; known: ${Object.keys(scenarios).join(', ')}`)
  for (const s of servers) await sc.setup(s)
  for (const s of servers) await sc.sample(s) // warm the connections
  for (const s of servers) { s.burst = []; s.cpu = [] } // warm-up samples do not count
  const xs = new Map(servers.map((s) => [s.name, []]))
  // Samples go in blocks of b back to back on one server (1 = strictly
  // interleaved); the blocks alternate which server goes first, so neither
  // always follows the other.
  const b = bi >= 0 ? block : (sc.block || 1)
  for (let i = 0; i * b < n; i++) {
    const order = i % 2 === 0 ? servers : [...servers].reverse()
    for (const s of order) {
      for (let j = 0; j < b && i * b + j < n; j++) xs.get(s.name).push(await sc.sample(s))
    }
  }
  for (const s of servers) await sc.teardown(s)
  const base = pct(xs.get(servers[0].name), 0.5)
  console.log(`${name}: ${n} samples per server, interleaved`)
  for (const s of servers) {
    const v = xs.get(s.name)
    const p50 = pct(v, 0.5)
    const cpu = s.cpu?.length ? `  sandbox CPU ${(s.cpu.reduce((a, b) => a + b, 0) / s.cpu.length).toFixed(2)} ms/run` : ''
    console.log(`  ${s.name.padEnd(10)} p50 ${p50.toFixed(1).padStart(7)} ms  p95 ${pct(v, 0.95).toFixed(1).padStart(7)} ms  min ${Math.min(...v).toFixed(1)}  max ${Math.max(...v).toFixed(1)}  p50 ratio ${(p50 / base).toFixed(3)}${cpu}`)
    s.cpu = []
  }
}
