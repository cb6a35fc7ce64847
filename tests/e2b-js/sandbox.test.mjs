// Sandbox lifecycle through the official SDK: create with metadata and envs,
// getInfo, list with a metadata filter, connect, isRunning, setTimeout
// expiry, kill, and what a killed sandbox answers.

import assert from 'node:assert/strict'
import { after, it } from 'node:test'

import { Sandbox, SandboxError, SandboxNotFoundError } from 'e2b'

import { integration, killAll, pollUntil, setup, uniqueTag } from './harness.mjs'

const env = await setup()
const created = new Set()

async function create(opts) {
  const sbx = await Sandbox.create(opts)
  created.add(sbx)
  return sbx
}

async function listIds(query) {
  const items = []
  const pager = Sandbox.list({ query })
  while (pager.hasNext) items.push(...(await pager.nextItems()))
  return items
}

// Compares dotted numeric versions, enough for "x.y.z[-pre]".
function versionAtLeast(v, min) {
  const a = String(v).split(/[.+-]/).slice(0, 3).map(Number)
  const b = min.split('.').map(Number)
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i] > b[i]
  return true
}

integration(env, 'sandbox lifecycle', () => {
  after(() => killAll(created))

  it('creates with metadata and envs; getInfo reports them', async () => {
    const tag = uniqueTag('meta')
    const sbx = await create({ metadata: { suite: 'e2b-js', run: tag }, envs: { SBX_TEST_ENV: 'from-create' } })

    assert.match(sbx.sandboxId, /^[a-z0-9]+$/, 'sandbox IDs must be lowercase alphanumerics (hosts split on "-")')

    const r = await sbx.commands.run('echo "$SBX_TEST_ENV|$E2B_SANDBOX|$E2B_SANDBOX_ID"')
    assert.equal(r.stdout.trim(), `from-create|true|${sbx.sandboxId}`)

    const info = await sbx.getInfo()
    assert.equal(info.sandboxId, sbx.sandboxId)
    assert.ok(info.templateId === 'base' || info.name === 'base', `templateId/name should name "base": ${JSON.stringify(info)}`)
    assert.deepEqual(info.metadata, { suite: 'e2b-js', run: tag })
    assert.equal(info.state, 'running')
    assert.ok(info.startedAt instanceof Date && !isNaN(info.startedAt), `startedAt: ${info.startedAt}`)
    assert.ok(info.endAt instanceof Date && !isNaN(info.endAt), `endAt: ${info.endAt}`)
    // No timeout was given: the SDK omits it and the server default is 300 s.
    const lifetimeS = (info.endAt - info.startedAt) / 1000
    assert.ok(lifetimeS > 270 && lifetimeS <= 330, `endAt - startedAt = ${lifetimeS}s, want about 300s`)
    assert.ok(versionAtLeast(info.envdVersion, '0.6.4'), `envdVersion ${info.envdVersion} < 0.6.4`)
    assert.ok(info.cpuCount >= 1, `cpuCount ${info.cpuCount}`)
    assert.ok(info.memoryMB >= 128, `memoryMB ${info.memoryMB}`)

    const same = await Sandbox.getInfo(sbx.sandboxId)
    assert.equal(same.sandboxId, sbx.sandboxId)
    assert.deepEqual(same.metadata, info.metadata)
  })

  it('Sandbox.list filters by metadata', async () => {
    const tag = uniqueTag('list')
    const [a, b] = await Promise.all([
      create({ metadata: { run: tag, which: 'a' } }),
      create({ metadata: { run: `${tag}-other`, which: 'b' } }),
    ])

    const byRun = await listIds({ metadata: { run: tag } })
    assert.deepEqual(
      byRun.map((s) => s.sandboxId),
      [a.sandboxId],
      'only the sandbox with the matching metadata value',
    )
    assert.deepEqual(byRun[0].metadata, { run: tag, which: 'a' })
    assert.equal(byRun[0].state, 'running')

    // Filters combine with AND.
    assert.deepEqual(await listIds({ metadata: { run: tag, which: 'b' } }), [])

    const all = (await listIds()).map((s) => s.sandboxId)
    assert.ok(all.includes(a.sandboxId) && all.includes(b.sandboxId), `unfiltered list lacks ours: ${all}`)
  })

  it('per-command envs override the sandbox envs', async () => {
    const sbx = await create({ envs: { LAYER: 'sandbox', KEEP: 'kept' } })
    const r = await sbx.commands.run('echo "$LAYER $KEEP"', { envs: { LAYER: 'command' } })
    assert.equal(r.stdout, 'command kept\n')
    assert.equal((await sbx.commands.run('echo "$LAYER"')).stdout, 'sandbox\n')
  })

  it('Sandbox.list pages with limit and nextToken', async () => {
    const tag = uniqueTag('page')
    const made = await Promise.all([0, 1, 2].map((i) => create({ metadata: { run: tag, i: String(i) } })))
    const pager = Sandbox.list({ query: { metadata: { run: tag } }, limit: 2 })
    const first = await pager.nextItems()
    assert.equal(first.length, 2, `first page: ${first.map((s) => s.sandboxId)}`)
    assert.equal(pager.hasNext, true, 'X-Next-Token missing after a full page')
    const second = await pager.nextItems()
    assert.equal(second.length, 1, `second page: ${second.map((s) => s.sandboxId)}`)
    assert.equal(pager.hasNext, false)
    assert.deepEqual(
      [...first, ...second].map((s) => s.sandboxId).sort(),
      made.map((s) => s.sandboxId).sort(),
    )
  })

  it('a command in flight when the sandbox is killed fails instead of hanging', async () => {
    const sbx = await create()
    const running = sbx.commands.run('sleep 120', { requestTimeoutMs: 30_000, timeoutMs: 90_000 })
    const outcome = running.then(
      (r) => ({ result: r }),
      (e) => ({ err: e }),
    )
    // Kill once the command is certainly running.
    await pollUntil('sleep to be running', async () =>
      (await sbx.commands.run('pgrep -x sleep || true')).stdout.trim() !== '',
    )
    await Sandbox.kill(sbx.sandboxId)
    created.delete(sbx)
    const { result, err } = await outcome
    assert.equal(result, undefined, 'the command finished normally although its sandbox was killed')
    assert.ok(err instanceof SandboxError, `want a SandboxError subclass, got ${err?.constructor?.name}: ${err?.message}`)
    assert.doesNotMatch(err.message, /requestTimeoutMs|timeoutMs/, 'the stream hung until a client timeout')
  })

  it('connect extends the timeout but never shortens it', async () => {
    const sbx = await create({ timeoutMs: 120_000 })
    const start = await sbx.getInfo()
    await Sandbox.connect(sbx.sandboxId, { timeoutMs: 900_000 })
    const longer = await sbx.getInfo()
    assert.ok(longer.endAt > start.endAt, `connect did not extend: ${start.endAt.toISOString()} -> ${longer.endAt.toISOString()}`)
    await Sandbox.connect(sbx.sandboxId, { timeoutMs: 10_000 })
    const after = await sbx.getInfo()
    assert.ok(after.endAt >= longer.endAt, `connect shortened: ${longer.endAt.toISOString()} -> ${after.endAt.toISOString()}`)
  })

  // sbx's contract (docs/architecture.md, Network): without internet access a
  // sandbox's network namespace has loopback only; with it, a veth as well.
  it('allowInternetAccess: false leaves only loopback', async () => {
    const [closed, open] = await Promise.all([create({ allowInternetAccess: false }), create()])
    const ifaces = async (s) =>
      (await s.commands.run("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")).stdout.trim().split('\n').sort()
    assert.deepEqual(await ifaces(closed), ['lo'])
    assert.ok((await ifaces(open)).some((i) => i !== 'lo'), 'a sandbox with internet access has no interface but lo')
    assert.equal((await closed.getInfo()).allowInternetAccess, false)
  })

  it('connects to an existing sandbox by ID', async () => {
    const sbx = await create()
    await sbx.files.write('/tmp/marker', 'connected')
    const again = await Sandbox.connect(sbx.sandboxId)
    assert.equal(again.sandboxId, sbx.sandboxId)
    assert.equal(await again.files.read('/tmp/marker'), 'connected')
    assert.equal(await again.isRunning(), true)
  })

  it('getMetrics reports cgroup usage', async () => {
    const sbx = await create()
    // Allocate and hold some memory so usage is visibly non-zero.
    await sbx.commands.run('python3 -c "import time; b = bytearray(32 << 20); time.sleep(600)"', {
      background: true,
      timeoutMs: 0,
    })
    const metrics = await pollUntil('a metrics sample', async () => {
      const m = await sbx.getMetrics()
      return m.length > 0 ? m : undefined
    }, { tries: 60, intervalMs: 500 })
    const last = metrics.at(-1)
    assert.ok(last.timestamp instanceof Date && !isNaN(last.timestamp), `timestamp ${last.timestamp}`)
    assert.ok(last.cpuCount >= 1, `cpuCount ${last.cpuCount}`)
    assert.ok(last.memTotal > 0, `memTotal ${last.memTotal}`)
    assert.ok(last.memUsed > 0 && last.memUsed <= last.memTotal, `memUsed ${last.memUsed} of ${last.memTotal}`)
    assert.ok(last.cpuUsedPct >= 0, `cpuUsedPct ${last.cpuUsedPct}`)
    await assert.rejects(Sandbox.getMetrics('nosuchsandbox0000000'), SandboxNotFoundError)
  })

  it('kill removes the sandbox; a second kill returns false', async () => {
    const tag = uniqueTag('kill')
    const sbx = await create({ metadata: { run: tag } })
    assert.equal(await sbx.isRunning(), true)

    assert.equal(await Sandbox.kill(sbx.sandboxId), true)
    created.delete(sbx)

    assert.equal(await sbx.isRunning(), false)
    assert.deepEqual(await listIds({ metadata: { run: tag } }), [], 'killed sandbox still listed')
    assert.equal(await Sandbox.kill(sbx.sandboxId), false, 'second kill should report not found')
    await assert.rejects(Sandbox.getInfo(sbx.sandboxId), SandboxNotFoundError)
  })

  it('commands.run on a killed sandbox fails with a clean SDK error', async () => {
    const sbx = await create()
    await sbx.kill()
    created.delete(sbx)

    // requestTimeoutMs bounds a hang; a hang would surface as the SDK's
    // "exceeding requestTimeoutMs" TimeoutError, which is rejected below.
    const err = await sbx.commands.run('echo hi', { requestTimeoutMs: 30_000 }).then(
      (r) => assert.fail(`command ran on a killed sandbox: ${JSON.stringify(r)}`),
      (e) => e,
    )
    assert.ok(err instanceof SandboxError, `want a SandboxError subclass, got ${err?.constructor?.name}: ${err?.message}`)
    assert.doesNotMatch(err.message, /requestTimeoutMs/, 'the request hung instead of failing')

    const readErr = await sbx.files.read('/etc/hostname', { requestTimeoutMs: 30_000 }).catch((e) => e)
    assert.ok(readErr instanceof SandboxError, `files.read: want a SandboxError, got ${readErr?.constructor?.name}: ${readErr?.message}`)
    assert.doesNotMatch(readErr.message, /requestTimeoutMs/)
  })

  it('setTimeout moves the end time and the sandbox expires', async () => {
    const tag = uniqueTag('ttl')
    const sbx = await create({ metadata: { run: tag } })
    const before = await sbx.getInfo()

    await sbx.setTimeout(3_000)
    const moved = await sbx.getInfo()
    assert.ok(moved.endAt < before.endAt, `endAt did not move earlier: ${before.endAt.toISOString()} -> ${moved.endAt.toISOString()}`)

    await pollUntil('the sandbox to expire', async () => !(await sbx.isRunning()), { tries: 120, intervalMs: 500 })
    created.delete(sbx)
    // The reaper may still be recording the kill when envd stops answering,
    // so the listing is polled too (bounded), not read once.
    await pollUntil('the expired sandbox to leave Sandbox.list', async () =>
      (await listIds({ metadata: { run: tag } })).length === 0,
    { tries: 50, intervalMs: 200 })
    assert.equal(await Sandbox.kill(sbx.sandboxId), false)
    await assert.rejects(Sandbox.getInfo(sbx.sandboxId), SandboxNotFoundError)
  })

  it('setTimeout can extend the lifetime', async () => {
    const sbx = await create({ timeoutMs: 60_000 })
    const before = await sbx.getInfo()
    await sbx.setTimeout(600_000)
    const after = await sbx.getInfo()
    assert.ok(after.endAt > before.endAt, `endAt did not move later: ${before.endAt.toISOString()} -> ${after.endAt.toISOString()}`)
    assert.equal(await sbx.isRunning(), true)
  })
})
