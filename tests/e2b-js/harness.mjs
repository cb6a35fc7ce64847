// Harness for the E2B JavaScript compatibility suite.
//
// Every *.test.mjs file does `const env = await setup()` before touching the
// SDK. If E2B_API_URL and E2B_API_KEY are already set, the suite talks to that
// server. Otherwise one `bin/sbx serve` is started for the whole `node --test`
// run and shared by every test file.
//
// Why one shared server rather than one per file: `node --test` runs each file
// in its own process, and several sbx servers on one machine would compete for
// the same bridge, address range and rootfs cache. So the first file process
// to arrive takes a lock directory keyed by the test runner's pid and spawns a
// detached supervisor (this same file, `node harness.mjs supervise ...`). The
// supervisor starts `sbx serve`, publishes its address and key in state.json,
// and stops the server (killing leftover sandboxes first) once the test runner
// process is gone. The other file processes just read state.json.
//
// Without root or crun the suite skips with a message, unless
// SBX_REQUIRE_INTEGRATION=1, in which case setup() throws so CI cannot pass by
// skipping.

import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { describe, test } from 'node:test'
import { fileURLToPath, pathToFileURL } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const repoRoot = path.resolve(here, '..', '..')
const sbxBin = process.env.SBX_BIN || path.join(repoRoot, 'bin', 'sbx')

// Generous bounds: the first start on a fresh machine builds the base root
// filesystem (minutes); later starts reuse the shared rootfs cache.
const healthTimeoutMs = 60_000
const setupTimeoutMs = Number(process.env.SBX_E2B_SETUP_TIMEOUT_MS || 20 * 60_000)

const requireIntegration = process.env.SBX_REQUIRE_INTEGRATION === '1'

let setupPromise

/**
 * Prepares the environment for the SDK. Resolves to
 * `{ skip, apiUrl, sandboxUrl, apiKey, logFile, external }`; when `skip` is a
 * string the caller must skip its tests with that message. Safe to call many
 * times: the work is done once per process.
 */
export function setup() {
  setupPromise ??= doSetup()
  return setupPromise
}

async function doSetup() {
  // E2B_DEBUG bypasses the API entirely; the suite must exercise the server.
  delete process.env.E2B_DEBUG

  if (process.env.E2B_API_URL && process.env.E2B_API_KEY) {
    process.env.E2B_SANDBOX_URL ||= process.env.E2B_API_URL
    const env = {
      external: true,
      apiUrl: process.env.E2B_API_URL,
      sandboxUrl: process.env.E2B_SANDBOX_URL,
      apiKey: process.env.E2B_API_KEY,
      logFile: undefined,
    }
    await waitForTemplate('base', env)
    return env
  }

  const missing = missingPrerequisites()
  if (missing) {
    const msg = `sbx E2B compatibility suite needs ${missing}`
    if (requireIntegration) {
      throw new Error(`${msg} (SBX_REQUIRE_INTEGRATION=1 turns this skip into a failure)`)
    }
    console.error(`# SKIP: ${msg}`)
    return { skip: msg }
  }

  const env = await sharedServer()
  process.env.E2B_API_URL = env.apiUrl
  process.env.E2B_SANDBOX_URL = env.sandboxUrl
  process.env.E2B_API_KEY = env.apiKey
  printLogOnFailure(env.logFile)
  await waitForTemplate('base', env)
  return env
}

/**
 * describe() for integration tests: when setup() asked to skip, registers one
 * skipped test instead, so the runner's summary counts the skip (a skipped
 * suite alone shows up as "tests 0").
 */
export function integration(env, name, fn) {
  if (env.skip) return test(name, { skip: env.skip }, () => {})
  return describe(name, fn)
}

function missingPrerequisites() {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    return 'root (run as root, or point E2B_API_URL/E2B_API_KEY at a running sbx serve)'
  }
  if (!onPath('crun')) return 'crun on PATH (apt-get install crun)'
  if (!isExecutable(sbxBin)) return `${sbxBin} (run \`make build\` in ${repoRoot})`
  return undefined
}

function onPath(name) {
  return (process.env.PATH || '').split(':').some((dir) => dir && isExecutable(path.join(dir, name)))
}

function isExecutable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK)
    return fs.statSync(file).isFile()
  } catch {
    return false
  }
}

function startTime(pid) {
  try {
    // Field 22 of /proc/<pid>/stat, counted after the parenthesised comm.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
  } catch {
    return '0'
  }
}

// The process whose lifetime bounds the shared server: the `node --test`
// runner when this file runs under it, this process otherwise.
function ownerPid() {
  return process.env.NODE_TEST_CONTEXT ? process.ppid : process.pid
}

async function sharedServer() {
  const owner = ownerPid()
  // The start time makes the key unique even if the pid is reused later.
  const stateDir = path.join(os.tmpdir(), `sbx-e2b-js-${owner}-${startTime(owner)}`)
  let leader = false
  try {
    fs.mkdirSync(stateDir, { mode: 0o700 })
    leader = true
  } catch (err) {
    if (err.code !== 'EEXIST') throw new Error(`create harness state dir ${stateDir}: ${err.message}`, { cause: err })
  }
  if (leader) {
    const out = fs.openSync(path.join(stateDir, 'supervisor.log'), 'a')
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url), 'supervise', stateDir, String(owner)], {
      detached: true,
      stdio: ['ignore', out, out],
    })
    child.unref()
    fs.closeSync(out)
  }
  return waitForState(stateDir)
}

async function waitForState(stateDir) {
  const stateFile = path.join(stateDir, 'state.json')
  const errorFile = path.join(stateDir, 'error.json')
  const deadline = Date.now() + healthTimeoutMs + 30_000
  while (Date.now() < deadline) {
    if (fs.existsSync(errorFile)) {
      const e = JSON.parse(fs.readFileSync(errorFile, 'utf8'))
      throw new Error(`sbx serve did not start: ${e.message}\n--- ${e.logFile} (tail) ---\n${e.logTail}`)
    }
    if (fs.existsSync(stateFile)) return JSON.parse(fs.readFileSync(stateFile, 'utf8'))
    await sleep(100)
  }
  const sup = path.join(stateDir, 'supervisor.log')
  throw new Error(`timed out waiting for the harness supervisor to start sbx serve; see ${sup}:\n${tail(sup)}`)
}

// node:test marks a failing file with a non-zero exit code; the server log is
// the first thing to read then, so print its tail.
function printLogOnFailure(logFile) {
  process.on('exit', (code) => {
    if (!code && !process.exitCode) return
    console.error(`--- sbx serve log ${logFile} (last lines) ---\n${tail(logFile, 80)}`)
  })
}

function tail(file, lines = 60) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n')
  } catch (err) {
    return `(cannot read ${file}: ${err.message})`
  }
}

/**
 * Waits until GET /templates lists `name` with buildStatus "ready", so tests
 * do not race the first-start template preparation with the SDK's 60 s
 * request timeout. Servers without GET /templates are not waited for.
 */
export async function waitForTemplate(name, env = currentEnv()) {
  const deadline = Date.now() + setupTimeoutMs
  let lastNote = 0
  let last = 'no answer yet'
  while (Date.now() < deadline) {
    let res
    try {
      res = await api('GET', '/templates', { env })
    } catch (err) {
      last = err.message
      await sleep(500)
      continue
    }
    if (res.status !== 200 || !Array.isArray(res.json)) {
      console.error(`# note: GET /templates answered ${res.status}; not waiting for template ${name}`)
      return
    }
    const t = res.json.find((t) => t.templateID === name || t.names?.includes(name) || t.aliases?.includes(name))
    last = t ? `buildStatus=${t.buildStatus}` : 'not listed'
    if (t?.buildStatus === 'ready') return
    if (t?.buildStatus === 'error' || t?.buildStatus === 'failed') {
      throw new Error(`template ${name} failed to build: ${JSON.stringify(t)}`)
    }
    if (Date.now() - lastNote > 30_000) {
      console.error(`# waiting for template ${name} (${last})`)
      lastNote = Date.now()
    }
    await sleep(1000)
  }
  throw new Error(`template ${name} not ready after ${setupTimeoutMs} ms (${last})`)
}

function currentEnv() {
  return {
    apiUrl: process.env.E2B_API_URL,
    sandboxUrl: process.env.E2B_SANDBOX_URL,
    apiKey: process.env.E2B_API_KEY,
  }
}

/**
 * Raw HTTP call to the control plane, for what the SDK cannot express
 * (malformed JSON, missing keys). Returns `{status, headers, text, json}`.
 * `key: null` sends no API key.
 */
export async function api(method, urlPath, { body, headers = {}, key, env = currentEnv(), timeoutMs = 30_000 } = {}) {
  const h = { ...headers }
  const k = key === undefined ? env.apiKey : key
  if (k) h['X-API-Key'] = k
  if (body !== undefined && typeof body !== 'string') {
    body = JSON.stringify(body)
    h['Content-Type'] ??= 'application/json'
  }
  const res = await fetch(new URL(urlPath, env.apiUrl), {
    method,
    headers: h,
    body,
    signal: AbortSignal.timeout(timeoutMs),
  })
  return toResult(res)
}

/**
 * Plain fetch to a port inside a sandbox through the sandbox proxy
 * (E2B_SANDBOX_URL with the E2b-Sandbox-Id / E2b-Sandbox-Port headers).
 */
export async function sandboxFetch(sandboxId, port, urlPath, init = {}) {
  const res = await fetch(new URL(urlPath, process.env.E2B_SANDBOX_URL), {
    ...init,
    headers: { ...init.headers, 'E2b-Sandbox-Id': sandboxId, 'E2b-Sandbox-Port': String(port) },
    signal: init.signal ?? AbortSignal.timeout(30_000),
  })
  return toResult(res)
}

async function toResult(res) {
  const text = await res.text()
  let json
  try {
    json = text ? JSON.parse(text) : undefined
  } catch {
    json = undefined
  }
  return { status: res.status, headers: res.headers, text, json }
}

/**
 * Polls `fn` until it returns a truthy value, at most `tries` times, and
 * returns that value; throws with `what` (and the last error) otherwise.
 * Bounded by attempts, not by wall-clock assertions.
 */
export async function pollUntil(what, fn, { tries = 100, intervalMs = 200 } = {}) {
  let lastErr
  for (let i = 0; i < tries; i++) {
    try {
      const v = await fn()
      if (v) return v
    } catch (err) {
      lastErr = err
    }
    await sleep(intervalMs)
  }
  throw new Error(`gave up waiting for ${what} after ${tries} attempts${lastErr ? `: ${lastErr.message}` : ''}`)
}

/**
 * Creates another team with `sbx team create NAME --json` and returns its API
 * key. Only possible when the harness started the server (it needs the data
 * dir); returns undefined for an external server.
 */
export function createTeam(env, name) {
  if (env.external || !env.dataDir) return undefined
  const r = spawnSync(sbxBin, ['team', 'create', name, '--json', '--data-dir', env.dataDir], {
    encoding: 'utf8',
    timeout: 30_000,
  })
  if (r.status !== 0) throw new Error(`sbx team create ${name} failed (status ${r.status}): ${r.stderr || r.error}`)
  const key = JSON.parse(r.stdout).apiKey
  if (!/^e2b_[0-9a-f]{40}$/.test(key ?? '')) throw new Error(`sbx team create printed an unexpected key: ${r.stdout}`)
  return key
}

/** A short random tag, unique per call, for metadata filters. */
export function uniqueTag(prefix = 't') {
  return `${prefix}${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`
}

/**
 * Kills every sandbox given, ignoring errors, for after() hooks: a test that
 * failed half-way must still not leak sandboxes.
 */
export async function killAll(sandboxes) {
  await Promise.all(
    [...sandboxes].filter(Boolean).map((s) => (typeof s === 'string' ? killById(s) : s.kill().catch(() => {}))),
  )
}

async function killById(id) {
  await api('DELETE', `/sandboxes/${encodeURIComponent(id)}`).catch(() => {})
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// ---------------------------------------------------------------------------
// Supervisor: `node harness.mjs supervise <stateDir> <ownerPid>`.

async function supervise(stateDir, owner) {
  const logFile = path.join(stateDir, 'serve.log')
  const fail = (message) => {
    writeJSON(path.join(stateDir, 'error.json'), { message, logFile, logTail: tail(logFile) })
  }

  let dataDir
  let serve
  try {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sbx-e2b-js-data-'))
    const listen = `127.0.0.1:${await freePort()}`
    const log = fs.openSync(logFile, 'a')
    serve = spawn(sbxBin, ['serve', '--listen', listen, '--data-dir', dataDir, '--metrics-interval', '1s'], {
      stdio: ['ignore', log, log],
    })
    fs.closeSync(log)
    let exited = null
    serve.on('exit', (code, signal) => {
      exited = { code, signal }
    })
    serve.on('error', (err) => {
      exited = { error: err.message }
    })
    console.log(`started ${sbxBin} serve --listen ${listen} --data-dir ${dataDir} (pid ${serve.pid})`)

    const base = `http://${listen}`
    const deadline = Date.now() + healthTimeoutMs
    for (;;) {
      if (exited) throw new Error(`sbx serve exited before answering /health: ${JSON.stringify(exited)}`)
      if (Date.now() > deadline) throw new Error(`GET ${base}/health did not answer 200 within ${healthTimeoutMs} ms`)
      const ok = await fetch(`${base}/health`, { signal: AbortSignal.timeout(2000) })
        .then((r) => r.status === 200)
        .catch(() => false)
      if (ok) break
      await sleep(100)
    }

    const vars = sbxEnv(dataDir, listen)
    const state = {
      apiUrl: vars.E2B_API_URL,
      sandboxUrl: vars.E2B_SANDBOX_URL || vars.E2B_API_URL,
      apiKey: vars.E2B_API_KEY,
      logFile,
      dataDir,
      external: false,
    }
    if (!state.apiUrl || !state.apiKey) {
      throw new Error(`sbx env printed no E2B_API_URL/E2B_API_KEY: ${JSON.stringify(vars)}`)
    }
    writeJSON(path.join(stateDir, 'state.json'), state)

    let signalled = false
    for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(sig, () => (signalled = true))
    while (alive(owner) && !exited && !signalled) await sleep(500)
    fs.rmSync(path.join(stateDir, 'state.json'), { force: true })
    if (exited) console.log(`sbx serve exited on its own: ${JSON.stringify(exited)}`)
    await stop(serve, state)
  } catch (err) {
    console.error(err)
    fail(err.message)
    if (serve) await stop(serve, undefined)
  }
  if (dataDir) teardownLeftovers(dataDir)
  cleanDataDir(dataDir)
}

function sbxEnv(dataDir, listen) {
  const r = spawnSync(sbxBin, ['env', '--data-dir', dataDir, '--listen', listen], { encoding: 'utf8', timeout: 30_000 })
  if (r.status !== 0) {
    throw new Error(`sbx env --data-dir ${dataDir} --listen ${listen} failed (status ${r.status}): ${r.stderr || r.error}`)
  }
  const vars = {}
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*export\s+([A-Z0-9_]+)=(.*)$/.exec(line)
    if (m) vars[m[1]] = m[2].trim().replace(/^(['"])(.*)\1$/, '$2')
  }
  return vars
}

async function stop(serve, state) {
  if (serve.exitCode !== null || serve.signalCode !== null) return
  if (state) {
    // Leftovers of crashed tests: kill them through the API so the server
    // tears down mounts and cgroups itself.
    try {
      const env = { apiUrl: state.apiUrl, apiKey: state.apiKey }
      const res = await api('GET', '/sandboxes', { env, timeoutMs: 10_000 })
      for (const s of Array.isArray(res.json) ? res.json : []) {
        console.log(`killing leftover sandbox ${s.sandboxID}`)
        await api('DELETE', `/sandboxes/${s.sandboxID}`, { env, timeoutMs: 10_000 }).catch(() => {})
      }
    } catch (err) {
      console.error(`listing leftover sandboxes: ${err.message}`)
    }
  }
  const done = new Promise((r) => serve.once('exit', r))
  serve.kill('SIGTERM')
  const timer = setTimeout(() => serve.kill('SIGKILL'), 20_000)
  await done
  clearTimeout(timer)
  console.log(`sbx serve stopped (code ${serve.exitCode}, signal ${serve.signalCode})`)
}

// sbx serve keeps running sandboxes, its warm pool included, alive across a
// shutdown so that the next start with the same data dir reattaches them.
// The harness's data dir is temporary and never started again, so whatever
// still runs there after the server stopped is torn down here with the OCI
// runtime that started it, and its mounts (overlay roots, tmpfs uppers,
// network namespaces) are unmounted.
function teardownLeftovers(dataDir) {
  const runtimeRoot = path.join(dataDir, 'runtime')
  let runtimes = []
  try {
    runtimes = fs.readdirSync(runtimeRoot)
  } catch {
    // No runtime state: nothing was started.
  }
  for (const rt of runtimes) {
    if (!onPath(rt)) {
      console.error(`cannot tear down ${rt} containers under ${runtimeRoot}: ${rt} not on PATH`)
      continue
    }
    const root = path.join(runtimeRoot, rt)
    const list = spawnSync(rt, ['--root', root, 'list', '-q'], { encoding: 'utf8', timeout: 30_000 })
    const ids = (list.stdout || '').split('\n').map((l) => l.trim()).filter(Boolean)
    for (const id of ids) {
      const del = spawnSync(rt, ['--root', root, 'delete', '-f', id], { encoding: 'utf8', timeout: 30_000 })
      console.log(`left by sbx serve: ${rt} container ${id} deleted (status ${del.status}${del.stderr ? `: ${del.stderr.trim()}` : ''})`)
    }
  }
  // Deepest first, so an overlay goes before the tmpfs under it.
  for (const m of mountsUnder(dataDir).sort((a, b) => b.length - a.length)) {
    if (spawnSync('umount', [m]).status !== 0) spawnSync('umount', ['-l', m])
  }
}

function mountsUnder(dir) {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m) => m && (m === dir || m.startsWith(dir + '/')))
}

// Removing a data dir that still has mounts under it would reach into a
// sandbox's root filesystem, so it is left in place (and reported) then.
function cleanDataDir(dataDir) {
  if (!dataDir) return
  const mounts = mountsUnder(dataDir)
  if (mounts.length) {
    console.error(`leaving ${dataDir}: still mounted: ${mounts.join(', ')}`)
    return
  }
  fs.rmSync(dataDir, { recursive: true, force: true })
}

function alive(pid) {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return err.code === 'EPERM'
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

function writeJSON(file, value) {
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(value, null, 2))
  fs.renameSync(`${file}.tmp`, file)
}

// Refuses to touch a data dir some sbx serve still uses.
function teardownCommand(dataDir) {
  dataDir = path.resolve(dataDir)
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let argv
    try {
      argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
    } catch {
      continue
    }
    const i = argv.indexOf('--data-dir')
    if (argv.includes('serve') && i >= 0 && path.resolve(argv[i + 1] ?? '') === dataDir) {
      console.error(`refusing: sbx serve (pid ${pid}) still uses ${dataDir}; stop it first`)
      process.exit(1)
    }
  }
  teardownLeftovers(dataDir)
  cleanDataDir(dataDir)
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [, , cmd, ...args] = process.argv
  if (cmd === 'supervise') {
    await supervise(args[0], Number(args[1]))
  } else if (cmd === 'teardown' && args.length === 1) {
    teardownCommand(args[0])
  } else {
    console.error('usage: node harness.mjs teardown DATA_DIR   (delete what a stopped sbx serve left running there)')
    process.exit(2)
  }
}
