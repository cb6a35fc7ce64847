// Lifecycle through the official SDK (issue 13): removing a missing path,
// a boot ID per boot, pause without memory (keepMemory false, and the
// create option onTimeout {action:'pause', keepMemory:false}), autoResume
// on traffic (one resume for many requests), snapshots (create, list,
// create from, delete) and fork.

import assert from 'node:assert/strict'
import fs from 'node:fs'
import { after, it } from 'node:test'

import { Sandbox } from 'e2b'

import { api, integration, killAll, pollUntil, setup, uniqueTag } from './harness.mjs'

const env = await setup()
const created = new Set()

async function create(opts) {
  const sbx = await Sandbox.create(opts)
  created.add(sbx)
  return sbx
}

const bootId = async (sbx) => (await sbx.files.read('/proc/sys/kernel/random/boot_id')).trim()

// A process whose only trace is in memory: a sleep with a duration of its
// own, found again by its command line (pids repeat across boots, and
// gVisor numbers them the same way in every boot).
let sleeps = 0
async function startSleeper(sbx) {
  const cmd = `sleep ${3600 + ++sleeps}`
  await sbx.commands.run(cmd, { background: true })
  return cmd
}

async function alive(sbx, cmd) {
  const r = await sbx.commands.run(`pgrep -fx '${cmd}' >/dev/null && echo yes || echo no`)
  return r.stdout.trim() === 'yes'
}

async function events(id) {
  const res = await api('GET', `/events/sandboxes/${id}`)
  assert.equal(res.status, 200, res.text)
  return res.json.map((e) => e.type)
}

integration(env, 'lifecycle', () => {
  after(() => killAll(created))

  it('files.remove of a path that does not exist succeeds (RemoveAll)', async () => {
    const sbx = await create()
    await sbx.files.remove('/home/user/never-was-here')
    await sbx.files.write('/home/user/once.txt', 'x')
    await sbx.files.remove('/home/user/once.txt')
    await sbx.files.remove('/home/user/once.txt')
    assert.equal(await sbx.files.exists('/home/user/once.txt'), false)
  })

  it('each sandbox boot has its own boot_id, not the host one', async () => {
    const host = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
    const [a, b] = await Promise.all([create(), create()])
    const [ia, ib] = [await bootId(a), await bootId(b)]
    assert.match(ia, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    assert.notEqual(ia, host)
    assert.notEqual(ia, ib)
    const w = await a.commands.run('echo x > /proc/sys/kernel/random/boot_id', { user: 'root' }).catch((e) => e)
    assert.notEqual(w.exitCode, 0, 'boot_id must be read-only')
    assert.equal(await bootId(a), ia)
  })

  it('pause({keepMemory:false}) ends processes, keeps files, and connect boots again', async () => {
    const sbx = await create()
    await sbx.files.write('/home/user/kept.txt', 'on disk')
    await sbx.commands.run('mkdir -p /opt/made && echo root > /opt/made/r && rm -f /etc/motd', { user: 'root' })
    const pid = await startSleeper(sbx)
    const boot1 = await bootId(sbx)

    assert.equal(await sbx.pause({ keepMemory: false }), true)
    assert.equal(await sbx.pause({ keepMemory: false }), false, 'already paused')
    const info = await Sandbox.getInfo(sbx.sandboxId)
    assert.equal(info.state, 'paused')
    const raw = await api('GET', `/sandboxes/${sbx.sandboxId}`)
    assert.equal(raw.json.pauseTier, 'filesystem')

    const again = await Sandbox.connect(sbx.sandboxId)
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'running')
    assert.equal(await again.files.read('/home/user/kept.txt'), 'on disk')
    assert.equal((await again.files.read('/opt/made/r')).trim(), 'root')
    assert.equal(await again.files.exists('/etc/motd'), false, 'a deletion survives the reboot')
    assert.equal(await alive(again, pid), false, 'processes end with a pause without memory')
    assert.notEqual(await bootId(again), boot1, 'a new boot has a new boot_id')
    // The filesystem of the second boot survives a second cycle too.
    await again.files.write('/home/user/second.txt', '2')
    assert.equal(await again.pause({ keepMemory: false }), true)
    const third = await Sandbox.connect(sbx.sandboxId)
    assert.equal(await third.files.read('/home/user/second.txt'), '2')
    assert.equal(await third.files.read('/home/user/kept.txt'), 'on disk')
    const types = await events(sbx.sandboxId)
    assert.equal(types.filter((t) => t === 'sandbox.lifecycle.resumed').length, 2)
  })

  it('connect({onResume:"reboot"}) boots a memory-paused sandbox from its files', async () => {
    const sbx = await create()
    await sbx.files.write('/home/user/f.txt', 'f')
    const pid = await startSleeper(sbx)
    assert.equal(await sbx.pause(), true)
    const again = await Sandbox.connect(sbx.sandboxId, { onResume: 'reboot' })
    assert.equal(await again.files.read('/home/user/f.txt'), 'f')
    assert.equal(await alive(again, pid), false)
  })

  it('a sandbox paused without memory can be killed, and its files go with it', async () => {
    const sbx = await create()
    await sbx.files.write('/home/user/gone.txt', 'x')
    assert.equal(await sbx.pause({ keepMemory: false }), true)
    await sbx.kill()
    await assert.rejects(Sandbox.getInfo(sbx.sandboxId))
    await assert.rejects(Sandbox.connect(sbx.sandboxId))
  })

  it('an auto-pause with keepMemory:false keeps only the filesystem', async () => {
    const sbx = await create({ timeoutMs: 3_000, lifecycle: { onTimeout: { action: 'pause', keepMemory: false } } })
    await sbx.files.write('/home/user/auto.txt', 'auto')
    const pid = await startSleeper(sbx)
    await pollUntil('auto-pause', async () => (await Sandbox.getInfo(sbx.sandboxId)).state === 'paused', { tries: 60 })
    const raw = await api('GET', `/sandboxes/${sbx.sandboxId}`)
    assert.equal(raw.json.pauseTier, 'filesystem')
    const again = await Sandbox.connect(sbx.sandboxId)
    assert.equal(await again.files.read('/home/user/auto.txt'), 'auto')
    assert.equal(await alive(again, pid), false)
  })

  it('autoResume: traffic to a paused sandbox resumes it, many requests one resume', async () => {
    const sbx = await create({ lifecycle: { onTimeout: 'pause', autoResume: true } })
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).lifecycle?.autoResume, true)
    await sbx.files.write('/home/user/a.txt', 'resumed')
    const pid = await startSleeper(sbx)
    assert.equal(await sbx.pause(), true)
    const reads = await Promise.all(Array.from({ length: 8 }, () => sbx.files.read('/home/user/a.txt')))
    assert.deepEqual(new Set(reads), new Set(['resumed']))
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'running')
    assert.equal(await alive(sbx, pid), true, 'an auto-resume keeps memory')
    const types = await events(sbx.sandboxId)
    assert.equal(types.filter((t) => t === 'sandbox.lifecycle.resumed').length, 1, types.join(','))
  })

  it('without autoResume a paused sandbox does not wake on traffic', async () => {
    const sbx = await create()
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).lifecycle?.autoResume, false)
    await sbx.pause()
    await assert.rejects(sbx.files.read('/etc/hostname', { requestTimeoutMs: 10_000 }))
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'paused')
  })

  it('autoResume with keepMemory:false is refused (as by E2B)', async () => {
    const res = await api('POST', '/v2/sandboxes', {
      body: { templateID: 'base', autoPause: true, autoPauseMemory: false, autoResume: { enabled: true } },
    })
    assert.equal(res.status, 400, res.text)
    assert.match(res.json.message, /autoResume/)
  })
})

export { create, created, uniqueTag }
