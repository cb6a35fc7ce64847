// files.* through the official SDK: envd /files (upload/download) and the
// filesystem.Filesystem service, including watchDir streams.

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, it } from 'node:test'

import { FileType, NotFoundError, Sandbox } from 'e2b'

import { integration, killAll, pollUntil, setup } from './harness.mjs'

const env = await setup()

integration(env, 'files', () => {
  let sbx
  before(async () => {
    sbx = await Sandbox.create()
  })
  after(() => killAll([sbx]))

  it('writes and reads text; getInfo describes the file', async () => {
    const info = await sbx.files.write('/home/user/hello.txt', 'hello world')
    assert.equal(info.path, '/home/user/hello.txt')
    assert.equal(info.name, 'hello.txt')
    assert.equal(info.type, FileType.FILE)

    assert.equal(await sbx.files.read('/home/user/hello.txt'), 'hello world')

    const st = await sbx.files.getInfo('/home/user/hello.txt')
    assert.equal(st.name, 'hello.txt')
    assert.equal(st.path, '/home/user/hello.txt')
    assert.equal(st.type, FileType.FILE)
    assert.equal(st.size, 11)
    assert.equal(st.owner, 'user', 'files written by the default user belong to it')
    assert.match(st.permissions, /^-[r-][w-][x-]/)
    assert.ok(st.modifiedTime instanceof Date && !isNaN(st.modifiedTime), `modifiedTime ${st.modifiedTime}`)

    // The shell sees the same file.
    assert.equal((await sbx.commands.run('cat /home/user/hello.txt')).stdout, 'hello world')
  })

  it('resolves relative paths against the user\'s home and creates parents', async () => {
    await sbx.files.write('rel/dir/note.txt', 'relative')
    assert.equal(await sbx.files.exists('/home/user/rel/dir/note.txt'), true)
    assert.equal(await sbx.files.read('/home/user/rel/dir/note.txt'), 'relative')
  })

  it('round-trips bytes exactly', async () => {
    const all = new Uint8Array(256 * 4)
    for (let i = 0; i < all.length; i++) all[i] = i % 256
    await sbx.files.write('/tmp/bytes.bin', all.buffer)
    const back = await sbx.files.read('/tmp/bytes.bin', { format: 'bytes' })
    assert.ok(back instanceof Uint8Array)
    assert.deepEqual(Buffer.from(back), Buffer.from(all))

    const big = randomBytes(3 * 1024 * 1024 + 17)
    await sbx.files.write('/tmp/big.bin', new Blob([big]))
    const bigBack = await sbx.files.read('/tmp/big.bin', { format: 'bytes' })
    assert.equal(bigBack.length, big.length)
    assert.ok(Buffer.from(bigBack).equals(big), 'large binary file differs after the round trip')
    const sum = (await sbx.commands.run('sha256sum /tmp/big.bin')).stdout.split(' ')[0]
    const { createHash } = await import('node:crypto')
    assert.equal(sum, createHash('sha256').update(big).digest('hex'))
  })

  it('writes several files in one call', async () => {
    const infos = await sbx.files.write([
      { path: '/home/user/multi/a.txt', data: 'A' },
      { path: '/home/user/multi/b.txt', data: 'BB' },
      { path: '/home/user/multi/deep/c.bin', data: new Uint8Array([0, 1, 2, 255]).buffer },
    ])
    assert.deepEqual(
      infos.map((i) => i.path).sort(),
      ['/home/user/multi/a.txt', '/home/user/multi/b.txt', '/home/user/multi/deep/c.bin'],
    )
    assert.equal(await sbx.files.read('/home/user/multi/a.txt'), 'A')
    assert.equal(await sbx.files.read('/home/user/multi/b.txt'), 'BB')
    assert.deepEqual([...(await sbx.files.read('/home/user/multi/deep/c.bin', { format: 'bytes' }))], [0, 1, 2, 255])
  })

  it('exists, makeDir and list', async () => {
    assert.equal(await sbx.files.exists('/home/user/nope/missing.txt'), false)

    assert.equal(await sbx.files.makeDir('/home/user/tree/a/b'), true)
    assert.equal(await sbx.files.makeDir('/home/user/tree/a/b'), false, 'makeDir of an existing dir returns false')
    assert.equal(await sbx.files.exists('/home/user/tree/a/b'), true)
    assert.equal((await sbx.files.getInfo('/home/user/tree/a')).type, FileType.DIR)

    await sbx.files.write('/home/user/tree/top.txt', 'x')
    await sbx.files.write('/home/user/tree/a/b/leaf.txt', 'y')

    const top = await sbx.files.list('/home/user/tree')
    assert.deepEqual(
      top.map((e) => [e.name, e.type, e.path]).sort(),
      [
        ['a', FileType.DIR, '/home/user/tree/a'],
        ['top.txt', FileType.FILE, '/home/user/tree/top.txt'],
      ],
    )

    const deep = await sbx.files.list('/home/user/tree', { depth: 3 })
    assert.deepEqual(
      deep.map((e) => e.path).sort(),
      ['/home/user/tree/a', '/home/user/tree/a/b', '/home/user/tree/a/b/leaf.txt', '/home/user/tree/top.txt'],
    )
  })

  it('rename and remove', async () => {
    await sbx.files.write('/home/user/mv/old.txt', 'moving')
    const moved = await sbx.files.rename('/home/user/mv/old.txt', '/home/user/mv/new.txt')
    assert.equal(moved.path, '/home/user/mv/new.txt')
    assert.equal(moved.name, 'new.txt')
    assert.equal(await sbx.files.exists('/home/user/mv/old.txt'), false)
    assert.equal(await sbx.files.read('/home/user/mv/new.txt'), 'moving')

    await sbx.files.remove('/home/user/mv/new.txt')
    assert.equal(await sbx.files.exists('/home/user/mv/new.txt'), false)

    await sbx.files.write('/home/user/rmdir/x/y.txt', 'y')
    await sbx.files.remove('/home/user/rmdir')
    assert.equal(await sbx.files.exists('/home/user/rmdir'), false, 'remove deletes directories recursively')
  })

  it('reading a missing file raises NotFoundError', async () => {
    await assert.rejects(sbx.files.read('/home/user/does-not-exist.txt'), NotFoundError)
    await assert.rejects(sbx.files.getInfo('/home/user/does-not-exist.txt'), NotFoundError)
  })

  it('respects the user option for ownership and permissions', async () => {
    await sbx.files.write('/root/owned-by-root.txt', 'r', { user: 'root' })
    assert.equal((await sbx.files.getInfo('/root/owned-by-root.txt', { user: 'root' })).owner, 'root')
    assert.equal((await sbx.commands.run('stat -c %U /root/owned-by-root.txt', { user: 'root' })).stdout.trim(), 'root')
    // Relative paths resolve against the chosen user's home.
    await sbx.files.write('rel-root.txt', 'rr', { user: 'root' })
    assert.equal(await sbx.files.read('/root/rel-root.txt', { user: 'root' }), 'rr')
  })

  it('gzip and octet-stream uploads and gzip downloads round-trip', async () => {
    const text = 'compress me '.repeat(1000)
    await sbx.files.write('/tmp/gz.txt', text, { gzip: true })
    assert.equal(await sbx.files.read('/tmp/gz.txt'), text)
    assert.equal(await sbx.files.read('/tmp/gz.txt', { gzip: true }), text)

    const bytes = randomBytes(64 * 1024)
    await sbx.files.write('/tmp/octet.bin', new Blob([bytes]), { useOctetStream: true })
    assert.ok(Buffer.from(await sbx.files.read('/tmp/octet.bin', { format: 'bytes', gzip: true })).equals(bytes))

    const stream = new Blob([bytes]).stream()
    await sbx.files.write('/tmp/streamed.bin', stream)
    assert.ok(Buffer.from(await sbx.files.read('/tmp/streamed.bin', { format: 'bytes' })).equals(bytes))
  })

  it('signed download and upload URLs work with the routing headers', async () => {
    const routing = { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '49983' }
    await sbx.files.write('/home/user/signed.txt', 'signed content')

    const url = await sbx.downloadUrl('/home/user/signed.txt')
    assert.match(url, /signature=v1_/)
    // No X-Access-Token: the signature alone authorises the request.
    const ok = await fetch(url, { headers: routing })
    assert.equal(ok.status, 200)
    assert.equal(await ok.text(), 'signed content')

    const forged = await fetch(url.replace(/signature=[^&]+/, 'signature=v1_AAAA'), { headers: routing })
    assert.equal(forged.status, 401)

    const expiredUrl = await sbx.downloadUrl('/home/user/signed.txt', { useSignatureExpiration: -10 })
    const expired = await fetch(expiredUrl, { headers: routing })
    assert.equal(expired.status, 401)
    assert.deepEqual(await expired.json(), { code: 401, message: 'signature is already expired' })

    const up = await sbx.uploadUrl('/home/user/uploaded-signed.txt')
    const form = new FormData()
    form.append('file', new Blob(['via signed url']), 'uploaded-signed.txt')
    const res = await fetch(up, { method: 'POST', body: form, headers: routing })
    assert.equal(res.status, 200, await res.clone().text())
    assert.equal(await sbx.files.read('/home/user/uploaded-signed.txt'), 'via signed url')
  })

  it('signed URLs work for a third party without routing headers', async () => {
    // The proxy finds the sandbox whose access token made the signature.
    await sbx.files.write('/home/user/public.txt', 'shared')
    const res = await fetch(await sbx.downloadUrl('/home/user/public.txt'))
    assert.equal(res.status, 200, await res.clone().text())
    assert.equal(await res.text(), 'shared')

    const up = await sbx.uploadUrl('/home/user/third-party.txt')
    const form = new FormData()
    form.append('file', new Blob(['from outside']), 'third-party.txt')
    const posted = await fetch(up, { method: 'POST', body: form })
    assert.equal(posted.status, 200, await posted.clone().text())
    assert.equal(await sbx.files.read('/home/user/third-party.txt'), 'from outside')

    // A forged signature matches no sandbox: the request is an API call without a key.
    const forged = await fetch((await sbx.downloadUrl('/home/user/public.txt')).replace(/signature=[^&]+/, 'signature=v1_AAAA'))
    assert.equal(forged.status, 401)
  })

  it('watchDir reports a file written after watching started', async () => {
    const dir = '/home/user/watched'
    await sbx.files.makeDir(dir)
    const events = []
    const handle = await sbx.files.watchDir(dir, (ev) => {
      events.push(ev)
    })
    try {
      await sbx.files.write(`${dir}/new.txt`, 'fresh')
      await pollUntil('a watch event for new.txt', () => events.some((e) => e.name === 'new.txt'), { tries: 100 })
      const types = new Set(events.filter((e) => e.name === 'new.txt').map((e) => e.type))
      assert.ok(types.has('create') || types.has('write'), `event types for new.txt: ${[...types]}`)

      await sbx.commands.run(`rm ${dir}/new.txt`)
      await pollUntil('a remove event for new.txt', () => events.some((e) => e.name === 'new.txt' && e.type === 'remove'), {
        tries: 100,
      })
    } finally {
      await handle.stop()
    }
  })

  it('watchDir on a missing directory fails', async () => {
    await assert.rejects(sbx.files.watchDir('/home/user/no-such-dir', () => {}), NotFoundError)
  })
})
