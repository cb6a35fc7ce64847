// sbx side by side with its peers on this machine (make bench-peers): the
// same scenarios against each sbx server in SBX_COMPARE (through the
// official SDK) and, when an engine answers on the Docker socket, against
// Docker (Engine API: create + start + exec, the root filesystem imported
// from sbx's base template). Prints one table with each p50's ratio to the
// first target's.
//
//   SBX_COMPARE='sbx=http://127.0.0.1:3901,e2b_...;sbx-runsc=http://...,e2b_...' \
//     DOCKER_SOCKET=/var/run/docker.sock DOCKER_IMAGE=sbx-base:bench \
//     node peers.mjs [--n 30] [--density 100]
//
// Scenarios, samples interleaved between targets:
//   loop     create -> first command 'echo ok' -> kill, back to back (timed whole)
//   tti      create -> first command 'echo ok' (kill outside the timed path)
//   density  --density sandboxes created 10 at a time and left idle: create
//            rate of the first and the last 100 (or tenth), memory per idle
//            sandbox (host MemAvailable drop / count, and the average of the
//            sandboxes' memory cgroups where sbx's layout has them), then
//            all killed
import { Sandbox } from 'e2b'
import fs from 'node:fs'
import http from 'node:http'

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(s.length * p))]
}
const args = process.argv.slice(2)
const opt = (name, def) => {
  const i = args.indexOf(name)
  return i >= 0 ? Number(args[i + 1]) : def
}
const n = opt('--n', 30)
const density = opt('--density', 100)
const wave = 10

const targets = (process.env.SBX_COMPARE || '').split(';').filter(Boolean).map((entry) => {
  const [name, rest] = entry.split('=')
  const [url, key] = (rest || '').split(',')
  const opts = { apiUrl: url, sandboxUrl: url, apiKey: key }
  return {
    name,
    async create() { return Sandbox.create(opts) },
    async run(s, cmd) { return (await s.commands.run(cmd)).stdout },
    async kill(s) { await s.kill() },
  }
})

// Docker through its Engine API on a unix socket: no CLI, no SDK needed.
function dockerAPI(socket, method, path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, method, path, headers: { 'Content-Type': 'application/json' } }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => {
        const buf = Buffer.concat(chunks)
        if (res.statusCode >= 300) reject(new Error(`docker ${method} ${path}: ${res.statusCode} ${buf}`))
        else resolve({ buf, json: () => JSON.parse(buf.toString() || 'null') })
      })
    })
    req.on('error', reject)
    if (body) req.write(JSON.stringify(body))
    req.end()
  })
}

// demux strips Docker's 8-byte stream headers from a non-TTY exec's output.
function demux(buf) {
  let out = ''
  for (let i = 0; i + 8 <= buf.length;) {
    const len = buf.readUInt32BE(i + 4)
    out += buf.subarray(i + 8, i + 8 + len).toString()
    i += 8 + len
  }
  return out
}

let docker = 'not present'
const sock = process.env.DOCKER_SOCKET || '/var/run/docker.sock'
if (fs.existsSync(sock)) {
  try {
    await dockerAPI(sock, 'GET', '/_ping')
    const image = process.env.DOCKER_IMAGE || 'sbx-base:bench'
    await dockerAPI(sock, 'GET', `/images/${encodeURIComponent(image)}/json`)
    docker = `present (image ${image})`
    targets.push({
      name: 'docker',
      async create() {
        const c = (await dockerAPI(sock, 'POST', '/containers/create', { Image: image, Cmd: ['sleep', 'infinity'], HostConfig: { Init: true } })).json()
        await dockerAPI(sock, 'POST', `/containers/${c.Id}/start`)
        return c.Id
      },
      async run(id, cmd) {
        const e = (await dockerAPI(sock, 'POST', `/containers/${id}/exec`, { Cmd: ['sh', '-c', cmd], AttachStdout: true, AttachStderr: true })).json()
        return demux((await dockerAPI(sock, 'POST', `/exec/${e.Id}/start`, { Detach: false, Tty: false })).buf)
      },
      async kill(id) { await dockerAPI(sock, 'DELETE', `/containers/${id}?force=true`) },
    })
  } catch (err) {
    docker = `not usable (${err.message.split('\n')[0]})`
  }
}

async function sample(t, killInside) {
  const t0 = performance.now()
  const s = await t.create()
  const out = await t.run(s, 'echo ok')
  if (killInside) await t.kill(s)
  const d = performance.now() - t0
  if (out !== 'ok\n') throw new Error(`${t.name}: echo gave ${JSON.stringify(out)}`)
  if (!killInside) await t.kill(s)
  return d
}

function memUsedMiB() {
  const m = Object.fromEntries(fs.readFileSync('/proc/meminfo', 'utf8').trim().split('\n').map((l) => {
    const [k, v] = l.split(':')
    return [k, parseInt(v, 10) / 1024]
  }))
  return m.MemTotal - m.MemAvailable
}

async function densityRun(t) {
  const before = memUsedMiB()
  const made = []
  const rates = []
  const chunk = Math.min(100, Math.max(wave, Math.floor(density / 10)))
  let t0 = performance.now()
  let lat = []
  for (let i = 0; i < density; i += wave) {
    const batch = await Promise.all(Array.from({ length: Math.min(wave, density - i) }, async () => {
      const s0 = performance.now()
      const s = await t.create()
      lat.push(performance.now() - s0)
      return s
    }))
    made.push(...batch)
    if (made.length % chunk === 0 || made.length === density) {
      const now = performance.now()
      rates.push({ upTo: made.length, perSec: (made.length - (rates.at(-1)?.upTo ?? 0)) / ((now - t0) / 1000), p50: pct(lat, 0.5), p95: pct(lat, 0.95) })
      t0 = now
      lat = []
    }
  }
  await new Promise((r) => setTimeout(r, 3000)) // let page cache and slabs settle
  const perSandbox = (memUsedMiB() - before) / made.length
  // What the sandboxes' own memory cgroups hold (sbx's layout; nothing
  // for Docker): exact, where the host's figure also moves with whatever
  // else runs on the machine.
  let cg = 0
  let seen = 0
  for (const s of made) {
    try {
      cg += Number(fs.readFileSync(`/sys/fs/cgroup/memory/sbx/${s.sandboxId}/memory.usage_in_bytes`, 'utf8')) / 1048576
      seen++
    } catch {}
  }
  for (let i = 0; i < made.length; i += wave) await Promise.all(made.slice(i, i + wave).map((s) => t.kill(s)))
  return { rates, perSandbox, cgroup: seen ? cg / seen : undefined }
}

const results = new Map(targets.map((t) => [t.name, {}]))
for (const [scenario, killInside] of [['loop', true], ['tti', false]]) {
  const xs = new Map(targets.map((t) => [t.name, []]))
  for (const t of targets) await sample(t, killInside) // warm connections
  const block = killInside ? 10 : 1
  for (let i = 0; i * block < n; i++) {
    const order = i % 2 === 0 ? targets : [...targets].reverse()
    for (const t of order) for (let j = 0; j < block && i * block + j < n; j++) xs.get(t.name).push(await sample(t, killInside))
  }
  for (const t of targets) results.get(t.name)[scenario] = { p50: pct(xs.get(t.name), 0.5), p95: pct(xs.get(t.name), 0.95) }
}
if (density > 0) {
  for (const t of targets) {
    await new Promise((r) => setTimeout(r, 5000)) // let pools refill and teardowns finish
    results.get(t.name).density = await densityRun(t)
  }
}

const f = (x) => (x === undefined ? '-' : x.toFixed(1))
const first = results.get(targets[0].name)
const ratio = (v, b) => (v && b ? `${(v / b).toFixed(2)}x` : '-')
console.log(`\npeers: ${n} samples per scenario and target, interleaved; density ${density} sandboxes, ${wave} at a time`)
console.log(`machine: ${process.env.SBX_MACHINE || ''}; Docker: ${docker}`)
console.log('| target | loop p50 / p95 ms | tti p50 / p95 ms | tti ratio | creates/s first→last | create p95 ms (last) | MiB per idle sandbox: host / cgroup |')
console.log('|---|---|---|---|---|---|---|')
for (const t of targets) {
  const r = results.get(t.name)
  const d = r.density
  const rate = d ? `${d.rates[0].perSec.toFixed(0)} → ${d.rates.at(-1).perSec.toFixed(0)}` : '-'
  console.log(`| ${t.name} | ${f(r.loop?.p50)} / ${f(r.loop?.p95)} | ${f(r.tti?.p50)} / ${f(r.tti?.p95)} | ${ratio(r.tti?.p50, first.tti?.p50)} | ${rate} | ${d ? f(d.rates.at(-1).p95) : '-'} | ${d ? `${f(d.perSandbox)} / ${f(d.cgroup)}` : '-'} |`)
}
for (const t of targets) {
  const d = results.get(t.name).density
  if (d) console.log(`${t.name} density, per chunk (up to: creates/s, create p50/p95 ms): ` +
    d.rates.map((r) => `${r.upTo}: ${r.perSec.toFixed(1)}/s ${r.p50.toFixed(0)}/${r.p95.toFixed(0)}`).join('; '))
}
if (!targets.some((t) => t.name === 'docker')) console.log(`docker: ${docker}; install Debian's docker.io and run make bench-peers again to add it`)
