// Snapshots and fork through the official SDK (issue 13): createSnapshot
// of a running sandbox (which keeps running), listSnapshots with paging
// and filters, Sandbox.create from a snapshot, deleteSnapshot, named
// snapshots, fork with a count, and that another team reaches none of it.
// A sandbox under runsc (restored from a template snapshot, or on a
// server started with --runtime runsc) is checkpointed: its snapshots and
// clones carry its processes and memory ("memory": true); any other
// carries its filesystem, and processes start afresh.

import assert from 'node:assert/strict'
import { after, it } from 'node:test'

import { Sandbox } from 'e2b'

import { api, createTeam, integration, killAll, setup, uniqueTag } from './harness.mjs'

const env = await setup()
const created = new Set()
const snapshots = new Set()

async function create(template, opts) {
  const sbx = template ? await Sandbox.create(template, opts) : await Sandbox.create(opts)
  created.add(sbx)
  return sbx
}

async function snapshot(id, opts) {
  const s = await Sandbox.createSnapshot(id, opts)
  snapshots.add(s.snapshotId)
  return s
}

async function listAll(opts) {
  const pager = Sandbox.listSnapshots(opts)
  const items = []
  let pages = 0
  while (pager.hasNext) {
    items.push(...(await pager.nextItems()))
    pages++
  }
  return { items, pages }
}

// Whether snapshots and forks of the sandbox carry memory: it runs under
// the runtime that can checkpoint.
async function withMemory(id) {
  const r = await api('GET', `/sandboxes/${id}`)
  return r.json.runtime === 'runsc'
}

async function alive(sbx, cmd) {
  const r = await sbx.commands.run(`pgrep -fx '${cmd}' >/dev/null && echo yes || echo no`)
  return r.stdout.trim() === 'yes'
}

integration(env, 'snapshots and fork', () => {
  after(async () => {
    await killAll(created)
    await Promise.all([...snapshots].map((s) => Sandbox.deleteSnapshot(s).catch(() => {})))
  })

  it('createSnapshot, listSnapshots, create from it, deleteSnapshot', async () => {
    const src = await create(undefined, { metadata: { run: uniqueTag('snap') } })
    await src.files.write('/home/user/data.txt', 'snapshotted')
    await src.commands.run('rm -f /etc/motd && mkdir -p /srv/x && echo y > /srv/x/y', { user: 'root' })
    const pid = 'sleep 3700'
    await src.commands.run(pid, { background: true })

    const memory = await withMemory(src.sandboxId)
    const s1 = await snapshot(src.sandboxId)
    assert.match(s1.snapshotId, /^[a-z0-9]+:default$/)
    const raw = await api('GET', `/snapshots?sandboxID=${src.sandboxId}`)
    assert.equal(raw.json[0].memory, memory, raw.text)
    assert.deepEqual(s1.names, [])
    assert.equal(await alive(src, pid), true, 'the source keeps running through a snapshot')
    assert.equal((await Sandbox.getInfo(src.sandboxId)).state, 'running')
    await src.files.write('/home/user/data.txt', 'changed after')
    const s2 = await snapshot(src.sandboxId)

    const mine = await listAll({ sandboxId: src.sandboxId, limit: 1 })
    assert.deepEqual(mine.items.map((s) => s.snapshotId), [s2.snapshotId, s1.snapshotId], 'newest first')
    assert.equal(mine.pages, 2, 'limit 1 pages, and the last page has no next token')

    const fromS1 = await create(s1.snapshotId)
    assert.equal(await fromS1.files.read('/home/user/data.txt'), 'snapshotted')
    assert.equal((await fromS1.files.read('/srv/x/y')).trim(), 'y')
    assert.equal(await fromS1.files.exists('/etc/motd'), false)
    assert.equal(await alive(fromS1, pid), memory, 'processes are in a snapshot exactly when it has memory')
    const fromS2 = await create(s2.snapshotId)
    assert.equal(await fromS2.files.read('/home/user/data.txt'), 'changed after')
    // A snapshot of a sandbox made from a snapshot carries both layers.
    await fromS2.files.write('/home/user/third.txt', '3')
    const s3 = await snapshot(fromS2.sandboxId)
    const fromS3 = await create(s3.snapshotId)
    assert.equal(await fromS3.files.read('/home/user/third.txt'), '3')
    assert.equal(await fromS3.files.read('/home/user/data.txt'), 'changed after')

    assert.equal(await Sandbox.deleteSnapshot(s1.snapshotId), true)
    assert.equal(await Sandbox.deleteSnapshot(s1.snapshotId), false)
    await assert.rejects(Sandbox.create(s1.snapshotId))
    // A sandbox made from it keeps its files after the snapshot is deleted.
    assert.equal(await fromS1.files.read('/home/user/data.txt'), 'snapshotted')
    const left = await listAll({ sandboxId: src.sandboxId })
    assert.deepEqual(left.items.map((s) => s.snapshotId), [s2.snapshotId])
    // The snapshot outlives its source.
    await src.kill()
    const again = await create(s2.snapshotId)
    assert.equal(await again.files.read('/home/user/data.txt'), 'changed after')
  })

  it('a named snapshot is reachable by name and takes new content under the same ID', async () => {
    const name = uniqueTag('snap')
    const src = await create()
    await src.files.write('/home/user/v.txt', 'v1')
    const a = await snapshot(src.sandboxId, { name })
    assert.equal(a.snapshotId, `${name}:default`)
    assert.deepEqual(a.names, [`${name}:default`])
    await src.files.write('/home/user/v.txt', 'v2')
    const b = await snapshot(src.sandboxId, { name })
    assert.equal(b.snapshotId, a.snapshotId)
    const byName = await listAll({ name })
    assert.equal(byName.items.length, 1)
    const s = await create(name)
    assert.equal(await s.files.read('/home/user/v.txt'), 'v2')
    const taken = await Sandbox.createSnapshot(src.sandboxId, { name: 'base' }).catch((e) => e)
    assert.ok(taken instanceof Error, 'a template name cannot be taken by a snapshot')
    assert.equal(await Sandbox.deleteSnapshot(`${name}:default`), true)
  })

  it('fork clones a running sandbox count times; the source keeps running', async () => {
    const tag = uniqueTag('fork')
    const src = await create(undefined, { metadata: { run: tag }, envs: { FORK_ENV: 'yes' } })
    await src.files.write('/home/user/f.txt', 'forked')
    const pid = 'sleep 3701'
    await src.commands.run(pid, { background: true })
    const bootSrc = (await src.files.read('/proc/sys/kernel/random/boot_id')).trim()
    const memory = await withMemory(src.sandboxId)

    const clones = await src.fork({ count: 2, timeoutMs: 120_000 })
    assert.equal(clones.length, 2)
    for (const c of clones) {
      assert.ok(!(c instanceof Error), String(c))
      created.add(c)
    }
    const ids = new Set([src.sandboxId, ...clones.map((c) => c.sandboxId)])
    assert.equal(ids.size, 3)
    assert.equal(await alive(src, pid), true)
    for (const c of clones) {
      assert.equal(await c.files.read('/home/user/f.txt'), 'forked')
      assert.equal((await c.commands.run('echo $FORK_ENV')).stdout.trim(), 'yes')
      assert.equal(await alive(c, pid), memory, 'a clone runs the source processes exactly when it has memory')
      if (!memory) assert.notEqual((await c.files.read('/proc/sys/kernel/random/boot_id')).trim(), bootSrc)
      const info = await Sandbox.getInfo(c.sandboxId)
      assert.equal(info.metadata.run, tag)
      assert.equal(info.state, 'running')
    }
    // Each clone has its own files from now on.
    await clones[0].files.write('/home/user/f.txt', 'clone 0')
    assert.equal(await clones[1].files.read('/home/user/f.txt'), 'forked')
    assert.equal(await src.files.read('/home/user/f.txt'), 'forked')

    const raw = await api('POST', `/sandboxes/${src.sandboxId}/fork`, { body: { count: 0 } })
    assert.equal(raw.status, 400, raw.text)
    await src.pause()
    const paused = await api('POST', `/sandboxes/${src.sandboxId}/fork`, { body: {} })
    assert.equal(paused.status, 409, paused.text)
  })

  it("another team can neither see, start from, delete nor fork a team's snapshot or sandbox", async (t) => {
    const otherKey = createTeam(env, uniqueTag('other'))
    if (!otherKey) return t.skip('needs the harness-started server (creates a team)')
    const src = await create()
    const s = await snapshot(src.sandboxId, { name: uniqueTag('private') })
    const other = { apiKey: otherKey }
    const theirs = await listAll(other)
    assert.equal(theirs.items.some((x) => x.snapshotId === s.snapshotId), false)
    await assert.rejects(Sandbox.create(s.snapshotId, other))
    assert.equal(await Sandbox.deleteSnapshot(s.snapshotId, other), false)
    await assert.rejects(Sandbox.createSnapshot(src.sandboxId, other))
    await assert.rejects(Sandbox.fork(src.sandboxId, other))
    assert.equal((await listAll({ sandboxId: src.sandboxId })).items.length, 1, 'still there for its team')
  })
})
