// Pause and resume through the official SDK: sbx.pause() then
// Sandbox.connect(id) keeps a running process's memory (a counter that
// keeps counting) and the files; a second pause returns false; paused and
// killed states in getInfo and list; ten cycles on one sandbox; a timeout
// that passes while paused; bad input.

import assert from 'node:assert/strict'
import { after, it } from 'node:test'

import { Sandbox, SandboxNotFoundError } from 'e2b'

import { api, integration, killAll, pollUntil, setup, sleep, uniqueTag } from './harness.mjs'

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
  return items.map((s) => s.sandboxId)
}

// The count lives only in the shell's memory; the file just shows it.
const counterLoop =
  'i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done'

async function counter(sbx) {
  const r = await sbx.commands.run('cat /tmp/count 2>/dev/null || echo 0')
  return Number(r.stdout.trim())
}

async function counterAbove(sbx, min) {
  return pollUntil(`counter above ${min}`, async () => {
    const n = await counter(sbx)
    return n > min ? n : 0
  })
}

integration(env, 'pause and resume', () => {
  after(() => killAll(created))

  it('pause then connect keeps a running process and files; a second pause returns false', async () => {
    const tag = uniqueTag('pause')
    const sbx = await create({ metadata: { run: tag } })
    await sbx.files.write('/home/user/state.txt', 'before pause')
    await sbx.commands.run(counterLoop, { background: true })
    const before = await counterAbove(sbx, 5)

    assert.equal(await sbx.pause(), true)
    assert.equal(await sbx.pause(), false, 'second pause should report already paused')
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'paused')
    assert.deepEqual(await listIds({ metadata: { run: tag }, state: ['paused'] }), [sbx.sandboxId])
    assert.deepEqual(await listIds({ metadata: { run: tag }, state: ['running'] }), [])
    assert.equal(await sbx.isRunning(), false)

    const again = await Sandbox.connect(sbx.sandboxId)
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'running')
    const after = await counterAbove(again, before)
    assert.ok(after > before, `counter ${after} did not continue from ${before}`)
    assert.equal(await again.files.read('/home/user/state.txt'), 'before pause')
    assert.deepEqual(await listIds({ metadata: { run: tag }, state: ['running'] }), [sbx.sandboxId])

    await again.kill()
    await assert.rejects(Sandbox.getInfo(sbx.sandboxId), SandboxNotFoundError)
    assert.deepEqual(await listIds({ metadata: { run: tag } }), [], 'killed sandbox still listed')
  })

  it('survives ten pause/resume cycles', async () => {
    const sbx = await create()
    await sbx.commands.run(counterLoop, { background: true })
    let last = await counterAbove(sbx, 0)
    for (let i = 1; i <= 10; i++) {
      assert.equal(await sbx.pause(), true, `pause ${i}`)
      const s = await Sandbox.connect(sbx.sandboxId)
      await s.commands.run(`echo ${i} >> /home/user/cycles`)
      last = await counterAbove(s, last)
    }
    const lines = (await sbx.files.read('/home/user/cycles')).trim().split('\n')
    assert.deepEqual(lines, ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10'])
  })

  it('a sandbox whose timeout passed while paused resumes with a fresh timeout', async () => {
    const sbx = await create({ timeoutMs: 3_000 })
    await sbx.files.write('/home/user/kept.txt', 'kept')
    assert.equal(await sbx.pause(), true)
    await sleep(5_000) // past the 3 s timeout
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'paused', 'the timeout killed a paused sandbox')
    const s = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 120_000 })
    const info = await Sandbox.getInfo(sbx.sandboxId)
    assert.equal(info.state, 'running')
    assert.ok(info.endAt.getTime() > Date.now() + 60_000, `endAt ${info.endAt.toISOString()} is not a fresh timeout`)
    assert.equal(await s.files.read('/home/user/kept.txt'), 'kept')
  })

  it('bad input: pause of an unknown sandbox is 404, resume of a killed one is 404 with a message', async () => {
    await assert.rejects(Sandbox.pause('nosuchsandbox0000000'), SandboxNotFoundError)
    const raw = await api('POST', '/sandboxes/nosuchsandbox0000000/pause')
    assert.equal(raw.status, 404)
    assert.equal(raw.json?.code, 404)

    const sbx = await create()
    await sbx.kill()
    await assert.rejects(Sandbox.connect(sbx.sandboxId), SandboxNotFoundError)
    for (const path of [`/sandboxes/${sbx.sandboxId}/resume`, `/v2/sandboxes/${sbx.sandboxId}/connect`]) {
      const r = await api('POST', path, { body: { timeout: 60 } })
      assert.equal(r.status, 404, `${path}: ${r.text}`)
      assert.match(r.json?.message ?? '', /killed/, `${path}: message should say the sandbox was killed: ${r.text}`)
    }
    const p = await api('POST', `/sandboxes/${sbx.sandboxId}/pause`)
    assert.equal(p.status, 404, `pause of a killed sandbox: ${p.text}`)
  })
})
