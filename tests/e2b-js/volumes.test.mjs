// Volumes through the official SDK's Volume class: create, getInfo, list,
// connect, destroy; the content API (writeFile, readFile, list, makeDir,
// getInfo, exists, updateMetadata, remove); a volume mounted into
// sandboxes at create, written by one and read by the next after the
// first is gone; another team's key and a wrong token get nothing.

import assert from 'node:assert/strict'
import { after, it } from 'node:test'

import { Sandbox, Volume, VolumeFileType, VolumePathNotFoundError } from 'e2b'

import { createTeam, integration, killAll, setup, uniqueTag } from './harness.mjs'

const env = await setup()
// What `sbx env` prints: where the Volume class finds the content API.
process.env.E2B_VOLUME_API_URL ||= env.apiUrl

integration(env, 'volumes', () => {
  const made = []
  const vols = []
  after(async () => {
    await killAll(made)
    await Promise.all(vols.map((v) => Volume.destroy(v.volumeId).catch(() => {})))
  })
  const newVolume = async () => {
    const v = await Volume.create(uniqueTag('vol-'))
    vols.push(v)
    return v
  }

  it('manages volumes and their content', async () => {
    const v = await newVolume()
    assert.match(v.volumeId, /^vol_/)
    assert.ok(v.token)
    const info = await Volume.getInfo(v.volumeId)
    assert.equal(info.name, v.name)
    assert.ok((await Volume.list()).some((x) => x.volumeId === v.volumeId))
    const again = await Volume.connect(v.volumeId)
    assert.equal(again.token, v.token)

    assert.deepEqual(await v.list('/'), [], 'a new volume is empty')
    const w = await v.writeFile('/docs/a.txt', 'hello volume', { force: true })
    assert.equal(w.type, VolumeFileType.FILE)
    assert.equal(w.size, 12)
    assert.equal(await v.readFile('/docs/a.txt'), 'hello volume')
    const bytes = await v.readFile('/docs/a.txt', { format: 'bytes' })
    assert.equal(bytes.length, 12)
    const d = await v.makeDir('/docs/sub', { mode: 0o750 })
    assert.equal(d.type, VolumeFileType.DIRECTORY)
    assert.equal(d.mode & 0o777, 0o750)
    const listed = await v.list('/docs')
    assert.deepEqual(listed.map((e) => e.name).sort(), ['a.txt', 'sub'])
    const deep = await v.list('/', { depth: 3 })
    assert.ok(deep.some((e) => e.path === '/docs/sub'))
    const st = await v.getInfo('/docs/a.txt')
    assert.ok(st.mtime instanceof Date)
    const md = await v.updateMetadata('/docs/a.txt', { mode: 0o600, uid: 0, gid: 0 })
    assert.equal(md.mode & 0o777, 0o600)
    assert.equal(md.uid, 0)
    assert.equal(await v.exists('/docs/nope'), false)
    await assert.rejects(v.readFile('/docs/nope'), VolumePathNotFoundError)
    await v.remove('/docs')
    assert.equal(await v.exists('/docs/a.txt'), false)

    assert.equal(await Volume.destroy(v.volumeId), true)
    assert.equal(await Volume.destroy(v.volumeId), false)
  })

  it('is mounted into sandboxes and outlives them', async () => {
    const v = await newVolume()
    await v.writeFile('/from-sdk.txt', 'sdk wrote this')
    const a = await Sandbox.create({ volumeMounts: { '/mnt/data': v } })
    made.push(a)
    assert.equal((await a.commands.run('cat /mnt/data/from-sdk.txt')).stdout, 'sdk wrote this')
    // The default user owns the volume's root; root in the sandbox is root there.
    await a.commands.run('echo sandbox-a > /mnt/data/from-a.txt && mkdir -p /mnt/data/dir')
    const owner = await a.commands.run('sudo touch /mnt/data/root-file && stat -c %u:%g /mnt/data/root-file /mnt/data/from-a.txt')
    assert.deepEqual(owner.stdout.trim().split('\n'), ['0:0', '1000:1000'])
    await a.kill()

    const b = await Sandbox.create({ volumeMounts: { '/data': v.name } })
    made.push(b)
    assert.equal((await b.commands.run('cat /data/from-a.txt')).stdout, 'sandbox-a\n')
    assert.equal(await v.readFile('/from-a.txt'), 'sandbox-a\n')
    const st = await v.getInfo('/root-file')
    assert.equal(st.uid, 0)

    await assert.rejects(Sandbox.create({ volumeMounts: { '/data': 'no-such-volume' } }), /not found/)
    await assert.rejects(Sandbox.create({ volumeMounts: { '/proc/x': v } }), /volumeMounts/)
  })

  it('another team and a wrong token get nothing', async (t) => {
    const v = await newVolume()
    await v.writeFile('/secret.txt', 'mine')
    const forged = new Volume(v.volumeId, v.name, 'vtk_wrong')
    await assert.rejects(forged.readFile('/secret.txt'), (e) => !/mine/.test(String(e.message)))
    const other = createTeam(env, uniqueTag('team'))
    if (!other) return t.skip('needs the harness-managed server')
    await assert.rejects(Volume.getInfo(v.volumeId, { apiKey: other }), /not found/)
    assert.equal(await Volume.destroy(v.volumeId, { apiKey: other }), false)
    assert.equal((await Volume.list({ apiKey: other })).length, 0)
    await assert.rejects(Sandbox.create({ apiKey: other, volumeMounts: { '/data': v.name } }), /not found/)
    assert.equal(await v.readFile('/secret.txt'), 'mine')
  })
})
