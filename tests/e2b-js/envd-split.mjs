// Where a sandbox's CPU goes at its first command, through the official SDK
// against one running server (as root: it reads the sandboxes' cgroups and
// envd's /proc entries). For each of --n sandboxes, created and killed one
// after the other with a pause for the pool to refill:
//   create  CPU of the sandbox's cgroup, and of envd's task (all threads,
//           schedstat: from the runtime's clone, so crun's part in the
//           container before it execs envd is in it), when create returns
//   run     the same for commands.run('echo ok') (envd + bash)
//   threads envd's threads, minflt its minor page faults
// then the CPU 4 pooled sandboxes use while idle for --idle seconds.
//
//   E2B_API_URL=http://127.0.0.1:3000 E2B_API_KEY=e2b_... node envd-split.mjs [--n 30] [--idle 5]
//
// The kill is not in it (the cgroup is gone): perf record -a and the
// samples of comm envd cover it. See docs/architecture.md, "envd's CPU".
import { Sandbox } from 'e2b'
import { readFileSync, readdirSync } from 'node:fs'

const args = process.argv.slice(2)
const flag = (name, def) => { const i = args.indexOf(name); return i >= 0 ? Number(args[i + 1]) : def }
const n = flag('--n', 30)
const idleS = flag('--idle', 5)
const url = process.env.E2B_API_URL
const opts = { apiUrl: url, sandboxUrl: process.env.E2B_SANDBOX_URL || url, apiKey: process.env.E2B_API_KEY }

const cg = (id) => `/sys/fs/cgroup/cpuacct/sbx/${id}`
const cgCPU = (id) => Number(readFileSync(`${cg(id)}/cpuacct.usage`, 'utf8')) / 1e6
function envdPid(id) {
  const pids = readFileSync(`${cg(id)}/cgroup.procs`, 'utf8').trim().split('\n').map(Number)
  return pids.find((p) => { try { return readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'envd' } catch { return false } }) ?? pids[0]
}
function envd(pid) {
  const tasks = readdirSync(`/proc/${pid}/task`)
  let ns = 0
  for (const t of tasks) ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0])
  const st = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')
  return { ms: ns / 1e6, threads: tasks.length, minflt: Number(st[7]) }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length

const rows = { 'create cgroup': [], 'create envd': [], 'run cgroup': [], 'run envd': [], threads: [], 'minflt create': [], 'minflt run': [] }
for (let i = 0; i <= n; i++) {
  const sbx = await Sandbox.create(opts)
  const id = sbx.sandboxId
  const pid = envdPid(id)
  const c0 = cgCPU(id), e0 = envd(pid)
  const r = await sbx.commands.run('echo ok')
  const c1 = cgCPU(id), e1 = envd(pid)
  await sbx.kill()
  if (r.stdout !== 'ok\n') throw new Error(`echo gave ${JSON.stringify(r.stdout)}`)
  if (i > 0) { // the first warms the connections
    rows['create cgroup'].push(c0); rows['create envd'].push(e0.ms)
    rows['run cgroup'].push(c1 - c0); rows['run envd'].push(e1.ms - e0.ms)
    rows.threads.push(e1.threads); rows['minflt create'].push(e0.minflt); rows['minflt run'].push(e1.minflt - e0.minflt)
  }
  await sleep(300) // the pool refills outside the next sample
}
for (const [k, v] of Object.entries(rows)) console.log(`${k.padEnd(14)} median ${median(v).toFixed(2).padStart(8)}  mean ${mean(v).toFixed(2).padStart(8)}`)
if (idleS > 0) {
  const sbxs = await Promise.all(Array.from({ length: 4 }, () => Sandbox.create(opts)))
  await sleep(1000)
  const at = () => sbxs.map((s) => cgCPU(s.sandboxId))
  const a = at()
  await sleep(idleS * 1000)
  const b = at()
  console.log(`idle: ${mean(b.map((x, i) => x - a[i])).toFixed(3)} ms of CPU per sandbox over ${idleS} s`)
  await Promise.all(sbxs.map((s) => s.kill()))
}
